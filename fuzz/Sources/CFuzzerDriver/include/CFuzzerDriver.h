#ifndef BRUME_CFUZZERDRIVER_H
#define BRUME_CFUZZERDRIVER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's programmatic entry point (compiler-rt, FuzzerDriver.cpp).
int LLVMFuzzerRunDriver(int *argc, char ***argv,
                        int (*callback)(const uint8_t *data, size_t size));

#endif
