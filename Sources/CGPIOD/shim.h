#include <gpiod.h>
#include <errno.h>

static inline int brume_gpiod_errno(void) { return errno; }
