#!/usr/bin/env bash
# Self-update (OTA) of the .deb for real, as root, without systemd (called by test-deb.sh with the
# 1.0.1 package installed): a real Mosquitto, an HTTPS package server (Python, a test CA), the
# gateway running as the brume user, offers signed with `brume sign-update`, and the installer
# `brume update-install` run as brume-update.service would run it. What systemd does on a Pi —
# start the installer when request.json appears (brume-update-trigger.path) and restart brume.service
# after dpkg (the package's postinst) — is done by this script; the units are checked by lintian.
#   1. 1.0.2 offered: downloaded and verified by the gateway, installed by the helper, the new
#      version reports healthy, the helper keeps it;
#   2. a tampered offer (the SHA-256 of another file): refused by the gateway, nothing installed;
#   3. 1.0.3, whose brume cannot run: installed, never healthy, the helper reinstalls 1.0.2.
set -euo pipefail
cd "$(dirname "$0")/.."
V2="$1"
fail() { echo "FAIL: $*"; [ -n "${T:-}" ] && { echo "--- gateway log"; tail -40 "$T/gw.log" 2>/dev/null; echo "--- helper log"; cat "$T"/helper*.log 2>/dev/null; }; exit 1; }
ok() { echo "ok: $*"; }
ARCH=$(dpkg --print-architecture)
T=$(mktemp -d /tmp/brume-ota.XXXXXX)
chmod 755 "$T"
# Not in /etc/brume: the test-deb run left a conf.d there that this gateway must not merge.
mkdir -p "$T/etc"; chmod 755 "$T/etc"
CONF="$T/etc/gateway.toml"
PIDS=()
cleanup() {
  touch "$T/stop"
  pkill -TERM -u brume -f "brume run --config $CONF" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f /var/cache/apt/archives/brume_1.0.1_"$ARCH".deb
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { local secs=$1; shift; for _ in $(seq 1 $((secs * 5))); do if "$@"; then return 0; fi; sleep 0.2; done; return 1; }

# Packages: 1.0.2 (the same build), 1.0.3 (its brume refuses to run), from the 1.0.1 package.
repack() {
  rm -rf "$T/pkg"; dpkg-deb -R "$V2" "$T/pkg"
  sed -i "s/^Version: .*/Version: $1/" "$T/pkg/DEBIAN/control"
  if [ "$2" = broken ]; then
    mv "$T/pkg/usr/bin/brume" "$T/pkg/usr/bin/brume.real"
    printf '#!/bin/sh\n[ "$1" = run ] && { echo "this build is broken" >&2; exit 1; }\nexec /usr/bin/brume.real "$@"\n' > "$T/pkg/usr/bin/brume"
    chmod 755 "$T/pkg/usr/bin/brume"
  fi
  dpkg-deb -b --root-owner-group "$T/pkg" "$T/www/brume_$1_$ARCH.deb" >/dev/null
}
mkdir -p "$T/www"
repack 1.0.2 good
repack 1.0.3 broken
chmod -R a+rX "$T/www"
# The package of the installed version, as apt would have left it in its cache: the first rollback target.
cp "$V2" /var/cache/apt/archives/brume_1.0.1_"$ARCH".deb

# A test CA and an HTTPS server for the packages.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -out "$T/ca.pem" -days 2 -subj /CN=brume-ota-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$T/srv.key" -out "$T/srv.csr" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' > "$T/srv.ext"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -out "$T/srv.pem" -days 2 -extfile "$T/srv.ext" 2>/dev/null
chmod a+r "$T/ca.pem"
HTTPS=$(free_port)
python3 - "$HTTPS" "$T" > "$T/https.log" 2>&1 <<'PY' &
import http.server, ssl, sys, functools
port, d = int(sys.argv[1]), sys.argv[2]
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d + "/www")
s = http.server.ThreadingHTTPServer(("127.0.0.1", port), h)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(d + "/srv.pem", d + "/srv.key")
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
PY
PIDS+=($!)
MQTT=$(free_port); API=$(free_port)
mosquitto -p "$MQTT" > "$T/mosquitto.log" 2>&1 &
PIDS+=($!)
wait_for 10 bash -c "echo > /dev/tcp/127.0.0.1/$MQTT" 2>/dev/null || fail "mosquitto did not start"
wait_for 10 bash -c "echo > /dev/tcp/127.0.0.1/$HTTPS" 2>/dev/null || fail "the HTTPS server did not start"

/usr/bin/brume keygen --kid ota --out "$T" > "$T/keygen.txt"
PUB=$(grep '^ota = ' "$T/keygen.txt" | cut -d'"' -f2)
cat > "$CONF" <<TOML
[gateway]
id = "gw-ota"
data_dir = "/var/lib/brume"

[api]
listen = "127.0.0.1:$API"

[uplink.cloud]
kind = "mqtt"
url = "mqtt://127.0.0.1:$MQTT"

[commands.keys]
ota = "$PUB"

[fleet]
updates = true
update_window = "30s"
update_ca_file = "$T/ca.pem"
health = "uplinks"
TOML
chgrp brume "$CONF"; chmod 640 "$CONF"

# The gateway as systemd would run it: the brume user, restarted whenever it stops.
( while [ ! -e "$T/stop" ]; do runuser -u brume -- /usr/bin/brume run --config $CONF >> "$T/gw.log" 2>&1 || true; sleep 0.5; done ) &
PIDS+=($!)
restart_gateway() { pkill -TERM -u brume -f "brume run --config $CONF" 2>/dev/null || true; }
state() { mosquitto_sub -p "$MQTT" -t brume/gw-ota/update/state -C 1 -W 3 2>/dev/null || true; }
wait_for 30 bash -c "curl -s http://127.0.0.1:$API/healthz >/dev/null 2>&1 || (echo > /dev/tcp/127.0.0.1/$API) 2>/dev/null" || fail "the gateway did not start"
wait_for 20 bash -c "mosquitto_sub -p $MQTT -t brume/gw-ota/update/state -C 1 -W 2 2>/dev/null | grep -q '\"installed\":\"1.0.1\"'" || fail "no update state with the installed version: $(state)"

offer() { # version url-file
  /usr/bin/brume sign-update --key "$T/ota.key" --kid ota --gateway gw-ota --url "https://localhost:$HTTPS/$(basename "$2")" "$1" \
    | mosquitto_pub -p "$MQTT" -t brume/gw-ota/update/offer -q 1 -s
}
install_run() { # name wait
  /usr/bin/brume update-install --config $CONF --wait "$2" > "$T/helper-$1.log" 2>&1 &
  HELPER=$!
}

# 1. A good update.
offer "$T/www/brume_1.0.2_$ARCH.deb" "$T/www/brume_1.0.2_$ARCH.deb"
wait_for 60 test -f /var/lib/brume/update/request.json || fail "the gateway did not download and hand over 1.0.2: $(state)"
state | grep -q '"outcome":"downloaded"' || fail "the state does not say downloaded: $(state)"
install_run good 60
wait_for 60 bash -c '[ "$(dpkg-query -W -f="\${Version}" brume)" = 1.0.2 ]' || fail "1.0.2 was not installed"
restart_gateway   # what the package's postinst does under systemd
wait "$HELPER" || fail "the helper did not keep 1.0.2 (exit $?)"
[ "$(dpkg-query -W -f='${Version}' brume)" = 1.0.2 ] || fail "1.0.2 is not installed at the end"
wait_for 20 bash -c "mosquitto_sub -p $MQTT -t brume/gw-ota/update/state -C 1 -W 2 2>/dev/null | grep -q '\"outcome\":\"applied\"'" || fail "no applied report: $(state)"
ok "self-update to 1.0.2: downloaded over HTTPS and verified by the gateway (unprivileged), installed by the helper, healthy, reported"

# 2. A tampered offer: signed for 1.0.3's SHA-256, serving 1.0.2's bytes under that name.
cp "$T/www/brume_1.0.2_$ARCH.deb" "$T/www/tampered.deb"; chmod a+r "$T/www/tampered.deb"
offer "$T/www/brume_1.0.3_$ARCH.deb" "$T/www/tampered.deb"
wait_for 30 bash -c "mosquitto_sub -p $MQTT -t brume/gw-ota/update/state -C 1 -W 2 2>/dev/null | grep -q '\"reason\":\"sha256_mismatch\"'" || fail "a tampered package was not refused: $(state)"
[ ! -e /var/lib/brume/update/request.json ] || fail "a tampered package was handed to the installer"
ok "a package whose SHA-256 is not the signed one: refused by the gateway, never handed over"

# 3. A broken update: installed, never healthy, rolled back to 1.0.2.
offer "$T/www/brume_1.0.3_$ARCH.deb" "$T/www/brume_1.0.3_$ARCH.deb"
wait_for 60 test -f /var/lib/brume/update/request.json || fail "the gateway did not hand over 1.0.3: $(state)"
install_run broken 20
wait_for 60 bash -c '[ "$(dpkg-query -W -f="\${Version}" brume)" = 1.0.3 ]' || fail "1.0.3 was not installed"
restart_gateway
set +e; wait "$HELPER"; rc=$?; set -e
[ "$rc" = 1 ] || fail "the helper should report a rollback (exit 1), got $rc"
[ "$(dpkg-query -W -f='${Version}' brume)" = 1.0.2 ] || fail "1.0.2 was not reinstalled: $(dpkg-query -W -f='${Version}' brume)"
grep -q "this build is broken" "$T/gw.log" || fail "the broken build never ran"
restart_gateway   # 1.0.2 again
wait_for 30 bash -c "mosquitto_sub -p $MQTT -t brume/gw-ota/update/state -C 1 -W 2 2>/dev/null | grep -q '\"outcome\":\"rolled_back\"'" || fail "no rollback report: $(state)"
state | grep -q '"reason":"unhealthy"' || fail "the rollback does not say why: $(state)"
ok "self-update to a broken 1.0.3: installed, not healthy within the window, 1.0.2 reinstalled, reported"
