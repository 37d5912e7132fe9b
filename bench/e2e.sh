#!/usr/bin/env bash
# End-to-end benchmark against the broker ceiling, same run, release build.
#   bench/e2e.sh                      # 200k readings × 3 runs
#   bench/e2e.sh --readings 1000000 --runs 5 --soak 600
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product brume >/dev/null
swift build -c release --static-swift-stdlib --product firmware-sim >/dev/null
exec python3 bench/e2e.py --bin "$(swift build -c release --static-swift-stdlib --show-bin-path)" "$@"
