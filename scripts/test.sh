#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests against real
# Mosquitto brokers that the tests start themselves on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build --build-tests
swift test --skip-build "$@"
