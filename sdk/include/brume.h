/*
 * brume.h — the Brume function ABI, version 1 (docs/functions.md).
 *
 * A Brume function is a WebAssembly module built freestanding (no libc, no WASI):
 *
 *   clang --target=wasm32 -O2 -nostdlib -ffreestanding -I sdk/include \
 *         -Wl,--no-entry -Wl,-z,stack-size=16384 -o fn.wasm fn.c
 *
 * Define BRUME_BUFFER_SIZE before including to change the exchange area (default 16 KiB; a
 * window function needs room for its largest window: 32 bytes + device + metric per reading,
 * rounded up to 8 — about 290 readings of "pump-1/flow_rate" in 16 KiB; a window that does not
 * fit fails its call as too_large).
 *
 * Write ONE of these, with the BRUME_* macros below:
 *   BRUME_READING(fn)  int fn(const brume_record *in)          every matching reading
 *   BRUME_WINDOW(fn)   int fn(const brume_record *in, int n)   a closed window: n readings
 *   BRUME_DECODE(fn)   int fn(const brume_record *in)          a payload (type BRUME_BYTES)
 * and return BRUME_DONE (the readings you emitted replace the input; none: it is dropped),
 * BRUME_KEEP (the input goes on too, followed by what you emitted) or a negative error code.
 *
 * Emit readings with brume_emit_number / brume_emit_bool / brume_emit_string. Log with
 * brume_log (rate-limited by the gateway). There is nothing else: no clock (use the reading's
 * time), no files, no network. Every call has a fuel budget and the memory a cap.
 */
#ifndef BRUME_H
#define BRUME_H

#include <stdint.h>
#include <stddef.h>

#define BRUME_ABI_VERSION 1
#define BRUME_DONE 0
#define BRUME_KEEP 1

enum { BRUME_NUMBER = 0, BRUME_BOOL = 1, BRUME_STRING = 2, BRUME_BYTES = 3 };
enum { BRUME_LOG_DEBUG = 0, BRUME_LOG_INFO = 1, BRUME_LOG_WARNING = 2, BRUME_LOG_ERROR = 3 };

/* One record: this header, then device, metric and text bytes (UTF-8, no terminator). */
typedef struct brume_record {
    int64_t time_ms;      /* ms since the epoch; emit 0 for the input's time */
    double number;        /* a number, or 0/1 for a bool */
    uint32_t type;        /* BRUME_NUMBER, BRUME_BOOL, BRUME_STRING, BRUME_BYTES */
    uint32_t device_len;
    uint32_t metric_len;
    uint32_t text_len;    /* a string value, or a decoder's payload */
    /* char data[device_len + metric_len + text_len], then padding to 8 bytes */
} brume_record;

__attribute__((import_module("env"), import_name("brume_emit")))
int32_t brume_emit(const brume_record *record);
__attribute__((import_module("env"), import_name("brume_log")))
void brume_log(int32_t level, const char *text, int32_t len);

/* -- reading a record -------------------------------------------------------------------- */

static inline const char *brume_device(const brume_record *r) { return (const char *)(r + 1); }
static inline const char *brume_metric(const brume_record *r) { return brume_device(r) + r->device_len; }
static inline const uint8_t *brume_bytes(const brume_record *r) { return (const uint8_t *)(brume_metric(r) + r->metric_len); }
static inline const char *brume_text(const brume_record *r) { return (const char *)brume_bytes(r); }
static inline const brume_record *brume_next(const brume_record *r) {
    size_t size = (sizeof(brume_record) + r->device_len + r->metric_len + r->text_len + 7) & ~(size_t)7;
    return (const brume_record *)((const char *)r + size);
}

static inline size_t brume_strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }
/* Whether a length-counted name equals a C string. */
static inline int brume_is(const char *name, uint32_t len, const char *s) {
    uint32_t i = 0;
    for (; i < len; i++) if (s[i] == 0 || s[i] != name[i]) return 0;
    return s[i] == 0;
}
static inline int brume_metric_is(const brume_record *r, const char *s) { return brume_is(brume_metric(r), r->metric_len, s); }
static inline int brume_device_is(const brume_record *r, const char *s) { return brume_is(brume_device(r), r->device_len, s); }

/* -- emitting ------------------------------------------------------------------------------ */

/* Room for the largest record Brume accepts: 32 + 128 + 128 + 256 bytes. */
#ifndef BRUME_OUT_SIZE
#define BRUME_OUT_SIZE 544
#endif
static _Alignas(8) uint8_t brume_out_[BRUME_OUT_SIZE];
/* Set when a record could not even be built here: the call then fails with this code. */
#define BRUME_ERR_EMIT_TOO_LARGE (-100)
static int brume_emit_failed_ = 0;

static inline void brume_copy_(uint8_t *dst, const char *src, uint32_t n) { for (uint32_t i = 0; i < n; i++) dst[i] = (uint8_t)src[i]; }

/* Emits one reading; device/metric are given with their lengths (use brume_device(in),
 * in->device_len to keep the input's). Returns 0, or -1 when refused (too long, bad name,
 * not finite...: the call then fails as bad_output; a record too large to build here fails it
 * with BRUME_ERR_EMIT_TOO_LARGE). */
static inline int32_t brume_emit_value(const char *device, uint32_t device_len, const char *metric, uint32_t metric_len,
                                       int64_t time_ms, uint32_t type, double number, const char *text, uint32_t text_len) {
    if (sizeof(brume_record) + (uint64_t)device_len + metric_len + text_len > BRUME_OUT_SIZE) { brume_emit_failed_ = 1; return -1; }
    brume_record *r = (brume_record *)brume_out_;
    r->time_ms = time_ms; r->number = number; r->type = type;
    r->device_len = device_len; r->metric_len = metric_len; r->text_len = text_len;
    uint8_t *p = (uint8_t *)(r + 1);
    brume_copy_(p, device, device_len);
    brume_copy_(p + device_len, metric, metric_len);
    if (text_len) brume_copy_(p + device_len + metric_len, text, text_len);
    return brume_emit(r);
}
/* The input's device, another metric (a C string): the common case of a derived metric. The
 * time is 0: the input's time (a window function's outputs: the window's end). */
static inline int32_t brume_emit_number(const brume_record *in, const char *metric, double value) {
    return brume_emit_value(brume_device(in), in->device_len, metric, (uint32_t)brume_strlen(metric), 0, BRUME_NUMBER, value, 0, 0);
}
static inline int32_t brume_emit_bool(const brume_record *in, const char *metric, int value) {
    return brume_emit_value(brume_device(in), in->device_len, metric, (uint32_t)brume_strlen(metric), 0, BRUME_BOOL, value ? 1 : 0, 0, 0);
}
static inline int32_t brume_emit_string(const brume_record *in, const char *metric, const char *text) {
    return brume_emit_value(brume_device(in), in->device_len, metric, (uint32_t)brume_strlen(metric), 0, BRUME_STRING, 0, text, (uint32_t)brume_strlen(text));
}
/* The input's device and metric with a new value (a map step). */
static inline int32_t brume_emit_same(const brume_record *in, double value) {
    return brume_emit_value(brume_device(in), in->device_len, brume_metric(in), in->metric_len, 0, BRUME_NUMBER, value, 0, 0);
}

static inline void brume_log_text(int32_t level, const char *text) { brume_log(level, text, (int32_t)brume_strlen(text)); }

/* -- the exchange area and the entry points ------------------------------------------------ */

#ifndef BRUME_BUFFER_SIZE
#define BRUME_BUFFER_SIZE 16384
#endif
static _Alignas(8) uint8_t brume_buffer_[BRUME_BUFFER_SIZE];

__attribute__((export_name("brume_buffer"))) int32_t brume_buffer(void) { return (int32_t)(uintptr_t)brume_buffer_; }
__attribute__((export_name("brume_buffer_size"))) int32_t brume_buffer_size(void) { return BRUME_BUFFER_SIZE; }

static inline int32_t brume_result_(int32_t r) {
    if (brume_emit_failed_) { brume_emit_failed_ = 0; return BRUME_ERR_EMIT_TOO_LARGE; }
    return r;
}
#define BRUME_READING(fn) \
    static int fn(const brume_record *in); \
    __attribute__((export_name("brume_reading"))) int32_t brume_reading(int32_t n) { (void)n; return brume_result_(fn((const brume_record *)brume_buffer_)); }
#define BRUME_WINDOW(fn) \
    static int fn(const brume_record *in, int n); \
    __attribute__((export_name("brume_window"))) int32_t brume_window(int32_t n) { return brume_result_(fn((const brume_record *)brume_buffer_, n)); }
#define BRUME_DECODE(fn) \
    static int fn(const brume_record *in); \
    __attribute__((export_name("brume_decode"))) int32_t brume_decode(int32_t n) { (void)n; return brume_result_(fn((const brume_record *)brume_buffer_)); }

#endif
