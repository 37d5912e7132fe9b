#!/bin/sh
# Builds a Brume function from C or Embedded Swift: sdk/build.sh fn.c|fn.swift [out.wasm]
# Uses clang's wasm32 target and wasm-ld (the Swift toolchain's, or Debian's clang + lld); Swift
# needs the toolchain's swiftc (6.2 or later: Embedded Swift for wasm32-unknown-none-wasm).
set -eu
src="$1"; out="${2:-${1%.*}.wasm}"
here="$(cd "$(dirname "$0")" && pwd)"
# The clang beside swift has wasm-ld (and swiftc for Embedded Swift); Debian's clang needs lld.
if [ -z "${CLANG:-}" ]; then
    swift="$(command -v swift 2>/dev/null || true)"
    for bin in ${swift:+"$(dirname "$(readlink -f "$swift")")"} /opt/swift/usr/bin /usr/share/swift/usr/bin; do
        if [ -x "$bin/clang" ] && [ -x "$bin/wasm-ld" ]; then CLANG="$bin/clang"; break; fi
    done
    CLANG="${CLANG:-$(command -v clang || true)}"
fi
[ -n "$CLANG" ] && [ -x "$CLANG" ] || { echo "sdk/build.sh: no clang with wasm-ld found (install the Swift toolchain, or Debian's clang and lld; or set CLANG)" >&2; exit 2; }
bin="$(dirname "$CLANG")"
if [ "${src##*.}" = "swift" ]; then
    [ -x "$bin/swiftc" ] || { echo "sdk/build.sh: Embedded Swift needs the toolchain's swiftc beside $CLANG" >&2; exit 2; }
    obj="$(mktemp /tmp/brume-fn-XXXXXX.o)"
    "$bin/swiftc" -target wasm32-unknown-none-wasm -enable-experimental-feature Embedded \
        -enable-experimental-feature Extern -wmo -Osize -parse-as-library -c -o "$obj" "$src"
    "$bin/wasm-ld" --no-entry -z stack-size=16384 -o "$out" "$obj"
    rm -f "$obj"
    echo "$out"
    exit 0
fi
"$CLANG" --target=wasm32 -O2 -nostdlib -ffreestanding -fno-builtin -I "$here/include" \
    -Wl,--no-entry -Wl,-z,stack-size=16384 -o "$out" "$src"
echo "$out"
