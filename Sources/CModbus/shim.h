#include <modbus/modbus.h>
#include <errno.h>

/* Macros Swift does not import. */
static inline int brume_modbus_enobase(void) { return MODBUS_ENOBASE; }
static inline int brume_modbus_errno(void) { return errno; }
