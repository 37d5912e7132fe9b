#include "brume_clock.h"
#include <sys/timex.h>

brume_clock_status brume_clock_read(void) {
    struct timex t = {0};
    brume_clock_status s = {0};
    int rc = ntp_adjtime(&t);
    if (rc < 0) return s;
    s.ok = 1;
    s.state = rc;
    s.unsync = (t.status & STA_UNSYNC) != 0;
    s.maxerror_us = t.maxerror;
    s.esterror_us = t.esterror;
    return s;
}
