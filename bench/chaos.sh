#!/usr/bin/env bash
# Fault and chaos suite (docs/RELIABILITY.md), release build, real brokers and processes.
#   bench/chaos.sh                    # every scenario, full parameters (~10 minutes)
#   bench/chaos.sh --quick            # every scenario, short CI parameters
#   bench/chaos.sh kill9 cloud-down [--quick] [--keep] [--out results.jsonl]
# Needs root for disk-full (loop mount); clock-jump-restart needs the Debian package faketime.
# Release with the static Swift standard library: the binary the Debian package ships (and CI
# builds release once, for scripts/test-deb.sh and this).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
dpkg-query -W -f='${Status}' faketime 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq faketime >/dev/null 2>&1 || true   # clock-jump only
swift build -c release --static-swift-stdlib --product brume >/dev/null
swift build -c release --static-swift-stdlib --product firmware-sim >/dev/null
exec python3 bench/chaos.py --bin "$(swift build -c release --static-swift-stdlib --show-bin-path)" "$@"
