#!/bin/sh
# Builds a Brume function from C: sdk/build.sh fn.c [out.wasm]
# Uses clang's wasm32 target and wasm-ld (the Swift toolchain's, or Debian's clang + lld).
set -eu
src="$1"; out="${2:-${1%.c}.wasm}"
here="$(cd "$(dirname "$0")" && pwd)"
# The clang beside swift has wasm-ld; Debian's clang needs lld installed too.
if [ -z "${CLANG:-}" ]; then
    swift_bin="$(dirname "$(command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)")"
    if [ -x "$swift_bin/clang" ]; then CLANG="$swift_bin/clang"; else CLANG="$(command -v clang)"; fi
fi
"$CLANG" --target=wasm32 -O2 -nostdlib -ffreestanding -fno-builtin -I "$here/include" \
    -Wl,--no-entry -Wl,-z,stack-size=16384 -Wl,--initial-memory=131072 -o "$out" "$src"
echo "$out"
