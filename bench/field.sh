#!/usr/bin/env bash
# Disk writes at field rates (docs/PERFORMANCE.md): 1, 10, 100 and 1,000 readings/s, the cloud
# online and offline, the shipped default configuration, release build. Each case runs a fresh
# gateway and measures /proc/PID/io write_bytes over a steady window.
#   bench/field.sh                 # 30 s per case
#   bench/field.sh --seconds 10    # shorter
#   bench/field.sh --extra 'hold = "0s"'   # a [buffer] setting for every case (e.g. before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product brume >/dev/null
swift build -c release --static-swift-stdlib --product firmware-sim >/dev/null
exec python3 bench/field.py --bin "$(swift build -c release --static-swift-stdlib --show-bin-path)" "$@"
