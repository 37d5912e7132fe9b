#!/usr/bin/env bash
# The outbox after a long outage at field rates: 1,000,000 one-reading segments (one commit
# per reading). Times each hot query before (the old SQL) and after, in the same run on the
# same file, then runs the release gateway on it: startup, idle CPU with the cloud away (age
# eviction every second), status latency, and the drain once the cloud is back.
#   bench/outbox-scale.sh                    # 1,000,000 segments
#   bench/outbox-scale.sh --segments 200000  # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product brume >/dev/null
swift build -c release --static-swift-stdlib --product firmware-sim >/dev/null
exec python3 bench/outbox_scale.py --bin "$(swift build -c release --static-swift-stdlib --show-bin-path)" "$@"
