#!/usr/bin/env bash
# Instructions per reading end to end and per stage, under valgrind's callgrind (stable on a
# noisy machine). Release build, shipped defaults, mosquitto_pub as the load.
#   bench/callgrind.sh                       # 20,000 readings at QoS 0
#   bench/callgrind.sh --qos 1 --readings 50000 --keep bench/results/callgrind
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
swift build -c release --static-swift-stdlib --product brume >/dev/null
swift build -c release --static-swift-stdlib --product firmware-sim >/dev/null
exec python3 bench/callgrind.py --bin "$(swift build -c release --static-swift-stdlib --show-bin-path)" "$@"
