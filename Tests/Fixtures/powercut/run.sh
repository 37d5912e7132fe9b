#!/bin/sh
# Builds and runs the powercut VFS self test (Sources/CPowerCut) outside SwiftPM.
#   Tests/Fixtures/powercut/run.sh [random-cuts-per-series (50)] [seed]
# Needs gcc (or CC=clang) and libsqlite3-dev.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${TMPDIR:-/tmp}/powercut_selftest.$$
trap 'rm -f "$out"' EXIT
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -g \
    -I "$root/Sources/CPowerCut/include" \
    "$root/Sources/CPowerCut/powercut.c" "$here/powercut_selftest.c" \
    -o "$out" -lsqlite3 -pthread
"$out" "$@"
