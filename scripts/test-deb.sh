#!/usr/bin/env bash
# Installs, upgrades, removes and purges the Debian package for real (dpkg, as
# root, on this machine or a throwaway container/chroot) and checks that:
# the files and the brume user are there; a technician's edit of
# /etc/brume/gateway.toml survives an upgrade; the outbox survives an upgrade
# and a remove; only purge deletes the data, the config and the user.
#
#   sudo scripts/test-deb.sh            # builds the package twice (1.0.0, 1.0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (dpkg)"; exit 1; }
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq libmosquitto1 libsqlite3-0 libserialport0 libmodbus5 >/dev/null
V1=$(scripts/package-deb.sh 1.0.0 | tail -1)
V2=$(SKIP_BUILD=1 BIN="$(swift build -c release --static-swift-stdlib --show-bin-path)/brume" scripts/package-deb.sh 1.0.1 | tail -1)
dpkg -P brume >/dev/null 2>&1 || true

dpkg -i "$V1" >/dev/null
[ -x /usr/bin/brume ] || fail "no /usr/bin/brume"
/usr/bin/brume check /etc/brume/gateway.toml >/dev/null || fail "the installed config does not pass brume check"
getent passwd brume >/dev/null || fail "no brume user"
id -nG brume | grep -qw dialout || fail "brume is not in dialout"
[ "$(stat -c %U:%a /var/lib/brume)" = "brume:750" ] || fail "/var/lib/brume is $(stat -c %U:%a /var/lib/brume)"
[ -f /lib/systemd/system/brume.service ] || fail "no systemd unit"
grep -q '^Type=notify' /lib/systemd/system/brume.service || fail "unit is not Type=notify"
ldd /usr/bin/brume | grep -q libswiftCore && fail "the Swift runtime is linked dynamically"
ok "installed 1.0.0: binary $(du -h /usr/bin/brume | cut -f1), user, dirs, unit; $(ldd /usr/bin/brume | wc -l) shared libraries"

# A technician's edit, and an outbox with data in it.
sed -i 's/gw-change-me/gw-site-42/' /etc/brume/gateway.toml
runuser -u brume -- sqlite3 /var/lib/brume/outbox.db "CREATE TABLE canary(x); INSERT INTO canary VALUES ('undelivered readings');"
SUM=$(sha256sum /var/lib/brume/outbox.db | cut -d' ' -f1)

dpkg -i --force-confold "$V2" >/dev/null
[ "$(dpkg-query -W -f='${Version}' brume)" = "1.0.1" ] || fail "upgrade did not happen"
grep -q gw-site-42 /etc/brume/gateway.toml || fail "the edited config did not survive the upgrade"
[ "$(sha256sum /var/lib/brume/outbox.db | cut -d' ' -f1)" = "$SUM" ] || fail "the outbox changed during the upgrade"
ok "upgraded to 1.0.1: config edit and outbox kept"

dpkg -r brume >/dev/null
[ ! -e /usr/bin/brume ] || fail "binary still there after remove"
[ -f /var/lib/brume/outbox.db ] || fail "remove deleted the outbox"
[ -f /etc/brume/gateway.toml ] || fail "remove deleted the config (a conffile)"
ok "removed: data and config kept"

dpkg -P brume >/dev/null
[ ! -e /var/lib/brume ] || fail "purge left /var/lib/brume"
[ ! -e /etc/brume ] || fail "purge left /etc/brume"
getent passwd brume >/dev/null && fail "purge left the brume user"
ok "purged: data, config and user gone"
echo "deb install/upgrade/remove/purge: all checks passed"
