#!/usr/bin/env bash
# Builds the Brume fuzz targets (release, libFuzzer + AddressSanitizer) and runs each for
# SECONDS_PER_TARGET seconds (default 10) on a temporary copy of its seed corpus.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#
# Environment: TARGETS="fuzz-json fuzz-wire" runs a subset; FUZZ_ARGS="-jobs=..." adds libFuzzer
# flags; KEEP_CORPUS=1 keeps the grown corpora (printed paths) instead of deleting them.
# Exit status: 0 when no target crashed, 1 when one did (inputs saved as crashes/<target>-<n>),
# 2 on a build or setup failure.
set -uo pipefail

SECONDS_PER_TARGET="${1:-10}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL_TARGETS="fuzz-json fuzz-payload fuzz-framers fuzz-nmea fuzz-command fuzz-wire fuzz-toml fuzz-modbus fuzz-lorawan"
TARGETS="${TARGETS:-$ALL_TARGETS}"
MAX_LEN=4096

die() { echo "run.sh: $*" >&2; exit 2; }

command -v swift >/dev/null || die "swift is not on PATH (install a Swift 6.1+ toolchain from swift.org)"

# System libraries of the root package's targets in our graph (BrumeStore: sqlite3, BrumeSerial:
# libserialport). Installed with apt-get on Debian/Ubuntu when missing and we are root.
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists sqlite3 2>/dev/null || missing+=(libsqlite3-dev)
pkg-config --exists libserialport 2>/dev/null || missing+=(libserialport-dev)
pkg-config --exists libmodbus 2>/dev/null || missing+=(libmodbus-dev)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "run.sh: installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    else
        die "missing ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
    fi
fi

# libFuzzer's runtime: the swift.org Linux toolchains ship it in their clang resource directory
# (lib/clang/<v>/lib/linux/libclang_rt.fuzzer-<arch>.a); swiftc only looks there, so a Debian
# libclang-rt-*-dev package would not help. Fail early with a clear message if it is absent.
SWIFT_BIN="$(dirname "$(readlink -f "$(command -v swift)")")"
ARCH="$(uname -m)"
if [[ "$(uname -s)" == Linux ]] && ! compgen -G "$SWIFT_BIN/../lib/clang/*/lib/linux/libclang_rt.fuzzer-$ARCH.a" >/dev/null \
   && ! compgen -G "$SWIFT_BIN/../lib/swift/clang/lib/linux/libclang_rt.fuzzer-$ARCH.a" >/dev/null; then
    die "this Swift toolchain has no libFuzzer runtime (libclang_rt.fuzzer-$ARCH.a); use a swift.org toolchain"
fi

SYMBOLIZER="$(command -v llvm-symbolizer || echo "$SWIFT_BIN/llvm-symbolizer")"

echo "== build (release, -sanitize=fuzzer,address)"
BUILD=(swift build --package-path "$HERE" --scratch-path "$HERE/.build" -c release
       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
"${BUILD[@]}" 2>&1 | grep -v "Cannot export local symbol '__asan_extra_spill_area'" | tail -n 25
[[ ${PIPESTATUS[0]} -eq 0 ]] || die "build failed"
BIN="$("${BUILD[@]}" --show-bin-path)"

mkdir -p "$HERE/crashes"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/brume-fuzz.XXXXXX")"
[[ -n "${KEEP_CORPUS:-}" ]] || trap 'rm -rf "$WORK"' EXIT

next_crash_name() {   # crashes/<target>-<n> with the first free n
    local n=1
    while [[ -e "$HERE/crashes/$1-$n" ]]; do n=$((n + 1)); done
    echo "$HERE/crashes/$1-$n"
}

failed=()
summary=()
for t in $TARGETS; do
    [[ -x "$BIN/$t" ]] || die "no target $t in $BIN"
    corpus="$WORK/$t/corpus"; artifacts="$WORK/$t/artifacts/"
    mkdir -p "$corpus" "$artifacts"
    cp "$HERE/corpus/$t/"* "$corpus/" 2>/dev/null || true
    log="$WORK/$t/log"
    echo "== $t (${SECONDS_PER_TARGET}s)"
    # SWIFT_BACKTRACE=enable=no: the Swift runtime's crash handler would race libFuzzer's (and
    # trips ASan); libFuzzer then prints the stack trace itself.
    SWIFT_BACKTRACE=enable=no ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$SYMBOLIZER}" \
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:symbolize=1}" \
        "$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len=$MAX_LEN -print_final_stats=1 \
        -artifact_prefix="$artifacts" ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1
    status=$?
    # libFuzzer's last status line ("#N DONE cov: ... ft: ... corp: ... exec/s: ...") and final stats.
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    eps="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)"
    corp="$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1)"
    echo "   $last"
    line="$(printf '%-13s runs=%-10s exec/s=%-7s %s %s' "$t" "${runs:-?}" "${eps:-?}" "${cov:-cov: ?}" "${corp:-}")"
    crashed=0
    for a in "$artifacts"*; do
        [[ -e "$a" ]] || continue
        dest="$(next_crash_name "$t")"
        cp "$a" "$dest"
        echo "   CRASH: $(basename "$a") saved as ${dest#"$HERE/"}"
        crashed=1
    done
    if [[ $status -ne 0 || $crashed -eq 1 ]]; then
        failed+=("$t")
        line+="  CRASHED (exit $status)"
        cp "$log" "$HERE/crashes/$t.log"
        # The report: the deadly signal / sanitizer error and the stack trace.
        grep -E -A40 'INVARIANT VIOLATED|ERROR: (libFuzzer|AddressSanitizer)|Fatal error|==[0-9]+==' "$log" | head -n 60 | sed 's/^/   | /'
    fi
    summary+=("$line")
    [[ -n "${KEEP_CORPUS:-}" ]] && echo "   corpus kept in $corpus"
done

echo
echo "== summary (${SECONDS_PER_TARGET}s per target, -max_len=$MAX_LEN)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "CRASHED: ${failed[*]} (inputs in fuzz/crashes/, logs in fuzz/crashes/<target>.log)"
    exit 1
fi
echo "no crashes"
