#!/usr/bin/env bash
# Installs the Debian packages Brume builds, tests and demos with.
# Idempotent; needs root (or sudo). The Swift 6 toolchain itself is expected
# on PATH (swift.org toolchain, e.g. /opt/swift/usr/bin).
set -euo pipefail
PKGS=(mosquitto mosquitto-clients libmosquitto-dev libsqlite3-dev sqlite3 libserialport-dev libmodbus-dev libgpiod-dev socat openssl
      influxdb               # a real InfluxDB 1.x for the sink tests (each test starts its own on a free port)
      python3-pymodbus python3-serial python3-serial-asyncio    # pymodbus: the independent Modbus slave in the tests
      python3-jsonschema     # an independent validator of docs/gateway.schema.json
      wabt)                  # wat2wasm: WebAssembly text examples and test modules (C ones use the toolchain's clang)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Independent peers from PyPI for the interop tests: a Sparkplug B host (pysparkplug, with
# paho-mqtt and protobuf). Pinned; installed once.
if ! python3 -c "import pysparkplug, paho.mqtt" >/dev/null 2>&1; then
  echo "installing from PyPI: pysparkplug==0.6.1"
  python3 -m pip install -q --root-user-action=ignore "pysparkplug==0.6.1" >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages "pysparkplug==0.6.1" >/dev/null
fi
# The LoRaWAN tests' independent packet forwarder: frames built with `cryptography` (AES-CMAC,
# AES) and payloads encoded by pycayennelpp.
if ! python3 -c "import cayennelpp, cryptography.hazmat.primitives.cmac" >/dev/null 2>&1; then
  echo "installing from PyPI: pycayennelpp==2.4.0, cryptography"
  python3 -m pip install -q --root-user-action=ignore "pycayennelpp==2.4.0" "cryptography>=41" >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages "pycayennelpp==2.4.0" "cryptography>=41" >/dev/null
fi
# promtool (alert rules and exposition checks in the tests), from Debian's prometheus package
# without installing it: no Prometheus server is started on the machine.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x /usr/local/bin/promtool ]; then
  echo "installing promtool (from Debian's prometheus package, extracted)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && { apt-get download -qq prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get download -qq prometheus >/dev/null 2>&1; }; } \
    && dpkg-deb -x prometheus_*.deb x \
    && install -m 0755 x/usr/bin/promtool /usr/local/bin/promtool) || echo "warning: could not install promtool" >&2
  rm -rf "$tmp"
fi
if ! command -v swift >/dev/null 2>&1; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$d/swift" ] && export PATH="$d:$PATH"
  done
fi
command -v swift >/dev/null 2>&1 || { echo "error: the Swift 6 toolchain is not on PATH (see https://www.swift.org/install/linux/)" >&2; exit 1; }
