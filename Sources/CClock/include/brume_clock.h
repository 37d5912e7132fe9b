#ifndef BRUME_CLOCK_H
#define BRUME_CLOCK_H

/// The kernel's view of the system clock's synchronisation (ntp_adjtime(3), read only:
/// modes = 0 needs no privilege). What `timedatectl` calls "System clock synchronized".
typedef struct {
    int ok;              ///< 1 when the call succeeded
    int state;           ///< TIME_OK (0) ... TIME_ERROR (5): 5 = not synchronised
    int unsync;          ///< STA_UNSYNC is set: no NTP daemon has disciplined the clock
    long long maxerror_us; ///< the kernel's estimate of the maximum error, microseconds
    long long esterror_us; ///< estimated error, microseconds
} brume_clock_status;

brume_clock_status brume_clock_read(void);

#endif
