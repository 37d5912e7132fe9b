#!/usr/bin/env bash
# Checks the live status page of a real gateway in headless Chromium: runs the demo
# (brokers, simulated MQTT/serial/GPS/Modbus devices, the gateway), waits until the
# gateway is ready, then takes a desktop and a phone screenshot of http://127.0.0.1:9669/
# (docs/img/status-page-desktop.png, docs/img/status-page-phone.png) and checks that the
# page rendered the gateway's devices.
#
#   scripts/status-page-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
mkdir -p docs/img
DEMO_SECONDS=45 scripts/demo.sh > /tmp/brume-status-demo.log 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  python3 - <<'PY' 2>/dev/null && break || sleep 1
import urllib.request; urllib.request.urlopen("http://127.0.0.1:9669/readyz", timeout=1)
PY
done
sleep 8   # let readings, windows and Modbus polls fill the page
python3 scripts/status-page-preview.py --url http://127.0.0.1:9669/ --screenshot docs/img/status-page-desktop.png --width 1280
python3 scripts/status-page-preview.py --url http://127.0.0.1:9669/ --screenshot docs/img/status-page-phone.png --width 390 --mobile
# The DOM after the scripts ran must name the gateway's devices (not just the empty shell).
DOM=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --run-all-compositor-stages-before-draw --virtual-time-budget=4000 \
      --dump-dom http://127.0.0.1:9669/ 2>/dev/null || true)
missing=0
for want in gw-demo-01 meter1 boiler gps dev1; do
  if grep -q "$want" <<<"$DOM"; then echo "page shows $want"; else echo "page does NOT show $want"; missing=1; fi
done
ls -l docs/img/status-page-*.png
exit $missing
