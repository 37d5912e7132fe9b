#!/usr/bin/env bash
# Backlog drain and startup benchmark (docs/PERFORMANCE.md): release build, real brokers.
#   bench/backlog.sh                      # 10,000,000 readings buffered, 1,000/s live during the drain
#   bench/backlog.sh --readings 1000000   # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product brume >/dev/null
swift build -c release --static-swift-stdlib --product firmware-sim >/dev/null
exec python3 bench/backlog.py --bin "$(swift build -c release --static-swift-stdlib --show-bin-path)" "$@"
