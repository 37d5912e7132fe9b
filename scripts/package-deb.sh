#!/usr/bin/env bash
# Builds the Debian package: release build with the static Swift standard
# library, the binary, /etc/brume/gateway.toml (conffile), /var/lib/brume,
# the systemd unit, docs. Output: dist/brume_VERSION_ARCH.deb
#
#   scripts/package-deb.sh [VERSION]
#
# arm64 (Raspberry Pi 4/5, 64-bit OS): run this script natively on the Pi (same
# steps; needs the Swift 6 toolchain for aarch64 and the -dev packages), or
# cross-compile with a Swift SDK for aarch64-unknown-linux-gnu:
#   swift build -c release --static-swift-stdlib --swift-sdk aarch64-unknown-linux-gnu --product brume
# then set ARCH=arm64 BIN=<that binary> and rerun this script with SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-$(git describe --tags --always 2>/dev/null | sed 's/^v//' | grep -E '^[0-9]' || echo 0.1.0)}"
ARCH="${ARCH:-$(dpkg --print-architecture)}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  source scripts/install-deps.sh
  swift build -c release --static-swift-stdlib --product brume >/dev/null
  BIN="$(swift build -c release --static-swift-stdlib --show-bin-path)/brume"
fi
BIN="${BIN:?}"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
install -D -m 0755 "$BIN" "$STAGE/usr/bin/brume"
strip --strip-unneeded "$STAGE/usr/bin/brume" 2>/dev/null || true
install -D -m 0640 deploy/gateway.default.toml "$STAGE/etc/brume/gateway.toml"
install -D -m 0644 deploy/brume.service "$STAGE/lib/systemd/system/brume.service"
install -d -m 0750 "$STAGE/var/lib/brume"
for f in README.md docs/configuration.md docs/field-guide.md docs/wire-format.md; do
  [ -f "$f" ] && install -D -m 0644 "$f" "$STAGE/usr/share/doc/brume/$(basename "$f")"
done
install -D -m 0644 gateway.toml "$STAGE/usr/share/doc/brume/gateway.example.toml"
mkdir -p "$STAGE/DEBIAN"
SIZE=$(du -sk "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: brume
Version: $VERSION
Architecture: $ARCH
Maintainer: Brume developers <brume@localhost>
Installed-Size: $SIZE
Depends: libc6 (>= 2.36), libmosquitto1, libsqlite3-0, libserialport0, libmodbus5, passwd
Recommends: mosquitto
Section: net
Priority: optional
Description: IoT edge gateway: sensors (MQTT, serial, NMEA) to the cloud, nothing lost
 Brume reads sensors over MQTT and serial lines, applies local rules and
 triggers, buffers every reading in SQLite so that nothing is lost while the
 cloud is away, syncs batches to a cloud MQTT broker and runs actuator commands
 at most once. Configured with /etc/brume/gateway.toml; runs as brume.service.
CONTROL
echo "/etc/brume/gateway.toml" > "$STAGE/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$STAGE/DEBIAN/"
mkdir -p dist
OUT="dist/brume_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
