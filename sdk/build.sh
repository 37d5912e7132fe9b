#!/bin/sh
# Builds a Brume function from C or Embedded Swift: sdk/build.sh fn.c|fn.swift [out.wasm]
# Uses clang's wasm32 target and wasm-ld (the Swift toolchain's, or Debian's clang + lld); Swift
# needs the toolchain's swiftc (6.2 or later: Embedded Swift for wasm32-unknown-none-wasm).
set -eu
src="$1"; out="${2:-${1%.*}.wasm}"
here="$(cd "$(dirname "$0")" && pwd)"
# The clang beside swift has wasm-ld; Debian's clang needs lld installed too.
if [ -z "${CLANG:-}" ]; then
    swift_bin="$(dirname "$(command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)")"
    if [ -x "$swift_bin/clang" ]; then CLANG="$swift_bin/clang"; else CLANG="$(command -v clang)"; fi
fi
if [ "${src##*.}" = "swift" ]; then
    obj="$(mktemp /tmp/brume-fn-XXXXXX.o)"
    "$(dirname "$CLANG")/swiftc" -target wasm32-unknown-none-wasm -enable-experimental-feature Embedded \
        -enable-experimental-feature Extern -wmo -Osize -parse-as-library -c -o "$obj" "$src"
    "$(dirname "$CLANG")/wasm-ld" --no-entry -z stack-size=16384 -o "$out" "$obj"
    rm -f "$obj"
    echo "$out"
    exit 0
fi
"$CLANG" --target=wasm32 -O2 -nostdlib -ffreestanding -fno-builtin -I "$here/include" \
    -Wl,--no-entry -Wl,-z,stack-size=16384 -Wl,--initial-memory=131072 -o "$out" "$src"
echo "$out"
