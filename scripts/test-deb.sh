#!/usr/bin/env bash
# Installs, upgrades, removes and purges the Debian package for real (dpkg, as root) and checks:
# - lintian: no errors or warnings;
# - install: the files, the man page and completions, the brume user (dialout), the permissions;
#   the service is enabled although no systemd runs here — as when the package goes into an
#   SD-card image from a chroot (dh_installsystemd's deb-systemd-helper creates the symlink);
# - an admin's `systemctl disable` survives an upgrade; a technician's edit of
#   /etc/brume/gateway.toml and the outbox survive it too;
# - remove keeps data and configuration; purge removes them, the user, and the enablement
#   symlink (no dangling link left).
# What a real Pi adds and this cannot show: systemd starting the unit (Type=notify, watchdog,
# ExecReload) — covered by Tests/EndToEndTests/SystemdEndToEndTests where systemd-run exists.
#
#   sudo scripts/test-deb.sh            # builds the package twice (1.0.0, 1.0.1) from one build
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (dpkg)"; exit 1; }
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends libmosquitto1 libsqlite3-0 libserialport0 libmodbus5 lintian debhelper >/dev/null
V1=$(LINTIAN=1 scripts/package-deb.sh 1.0.0 | tail -1)
ok "lintian: no errors or warnings in $V1"
V2=$(SKIP_BUILD=1 BIN="$(swift build -c release --static-swift-stdlib --show-bin-path)/brume" scripts/package-deb.sh 1.0.1 | tail -1)
dpkg -P brume >/dev/null 2>&1 || true
WANTS=/etc/systemd/system/multi-user.target.wants/brume.service

dpkg -i "$V1" >/dev/null
[ -x /usr/bin/brume ] || fail "no /usr/bin/brume"
/usr/bin/brume check /etc/brume/gateway.toml >/dev/null 2>&1 || fail "the installed config does not pass brume check"
/usr/bin/brume check /etc/brume/gateway.toml 2>&1 | grep -q "looks like a placeholder" || fail "brume check does not warn about the placeholder id"
getent passwd brume >/dev/null || fail "no brume user"
id -nG brume | grep -qw dialout || fail "brume is not in dialout"
[ "$(stat -c %U:%a /var/lib/brume)" = "brume:750" ] || fail "/var/lib/brume is $(stat -c %U:%a /var/lib/brume)"
[ "$(stat -c %U:%G:%a /etc/brume/gateway.toml)" = "root:brume:640" ] || fail "gateway.toml is $(stat -c %U:%G:%a /etc/brume/gateway.toml)"
[ "$(stat -c %U:%G:%a /etc/brume/conf.d)" = "root:brume:750" ] || fail "conf.d is $(stat -c %U:%G:%a /etc/brume/conf.d)"
# A site file in conf.d replaces the packaged placeholder id (docs/configuration.md, "conf.d").
printf '[gateway]\nid = "${SITE_ID}"\n' > /etc/brume/conf.d/50-site.toml
SITE_ID=gw-site-17 /usr/bin/brume check /etc/brume/gateway.toml > /tmp/brume-deb-check.txt 2>&1 || { cat /tmp/brume-deb-check.txt; fail "the config with conf.d/50-site.toml does not pass brume check"; }
grep -q 'gateway "gw-site-17".*merged: /etc/brume/conf.d/50-site.toml' /tmp/brume-deb-check.txt || fail "conf.d/50-site.toml was not merged: $(cat /tmp/brume-deb-check.txt)"
grep -q "placeholder" /tmp/brume-deb-check.txt && fail "the placeholder warning stays although conf.d sets the id"
/usr/bin/brume check /etc/brume/gateway.toml > /tmp/brume-deb-check.txt 2>&1 && fail "a config whose variable is unset passed brume check"
grep -q "/etc/brume/conf.d/50-site.toml:2:6: environment variable SITE_ID is not set" /tmp/brume-deb-check.txt || fail "an unset variable is not reported in the included file: $(cat /tmp/brume-deb-check.txt)"
[ -f /usr/share/brume/gateway.schema.json ] && head -1 /etc/brume/gateway.toml | grep -q '^#:schema /usr/share/brume/gateway.schema.json' \
  || fail "the JSON Schema is not shipped or the packaged config does not point editors at it"
UNIT=$(dpkg -L brume | grep -E '/systemd/system/brume.service$' | head -1)
[ -n "$UNIT" ] && [ -f "$UNIT" ] || fail "no systemd unit"
grep -q '^Type=notify' "$UNIT" || fail "unit is not Type=notify"
grep -q '^ExecReload=/usr/bin/brume reload' "$UNIT" || fail "systemctl reload does not report a rejected file"
[ -L "$WANTS" ] || fail "the service is not enabled after an install without a running systemd (chroot/image)"
[ -f /lib/systemd/system/brume-update.service ] && [ -f /lib/systemd/system/brume-update-trigger.path ] || fail "the self-update units are not installed"
[ -L /etc/systemd/system/multi-user.target.wants/brume-update-trigger.path ] || fail "the self-update trigger (path unit) is not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/brume-update.service ] || fail "the self-update installer must only start from its path unit"
[ -f /usr/share/man/man1/brume.1.gz ] || fail "no man page"
man -l /usr/share/man/man1/brume.1.gz 2>/dev/null | grep -q "brume" || zcat /usr/share/man/man1/brume.1.gz | grep -q '^\.TH' || fail "the man page does not render"
[ -f /usr/share/bash-completion/completions/brume ] && [ -f /usr/share/zsh/vendor-completions/_brume ] \
  && [ -f /usr/share/fish/vendor_completions.d/brume.fish ] || fail "shell completions missing"
grep -q "check" /usr/share/bash-completion/completions/brume || fail "bash completion does not know the subcommands"
[ -f /usr/share/doc/brume/operations.md.gz ] || [ -f /usr/share/doc/brume/operations.md ] || fail "operations.md (linked from the field guide) not shipped"
[ -f /usr/share/doc/brume/copyright ] && [ -f /usr/share/doc/brume/changelog.gz ] || fail "copyright or changelog missing"
DEPS=$(dpkg-query -W -f='${Depends}' brume)
for d in libc6 libmosquitto1 libsqlite3-0 libserialport0 libmodbus5 zlib1g; do
  echo "$DEPS" | grep -q "$d" || fail "Depends lacks $d: $DEPS"
done
echo "$DEPS" | grep -q 'libc6 (>= 2.36)' || fail "libc6 is not versioned for DT_RELR (>= 2.36): $DEPS"
SIZE_MB=$(( $(stat -c %s /usr/bin/brume) / 1048576 ))
[ "$SIZE_MB" -le 40 ] || fail "the installed binary is $SIZE_MB MB (was 35 MB stripped: full Foundation/ICU linked again? docs/PERFORMANCE.md)"
ldd /usr/bin/brume | grep -q libswiftCore && fail "the Swift runtime is linked dynamically"
ok "installed 1.0.0: binary $(du -h /usr/bin/brume | cut -f1), enabled (image-style), man page, completions, docs; Depends: $DEPS"

# The admin disables the service; a technician edits the config; the outbox holds data.
systemctl disable brume.service >/dev/null 2>&1
[ ! -e "$WANTS" ] || fail "disable did not remove the symlink"
sed -i 's/gw-change-me/gw-site-42/' /etc/brume/gateway.toml
runuser -u brume -- sqlite3 /var/lib/brume/outbox.db "CREATE TABLE canary(x); INSERT INTO canary VALUES ('undelivered readings');"
SUM=$(sha256sum /var/lib/brume/outbox.db | cut -d' ' -f1)

dpkg -i --force-confold "$V2" >/dev/null
[ "$(dpkg-query -W -f='${Version}' brume)" = "1.0.1" ] || fail "upgrade did not happen"
[ ! -e "$WANTS" ] || fail "the upgrade re-enabled a service the admin disabled"
grep -q gw-site-42 /etc/brume/gateway.toml || fail "the edited config did not survive the upgrade"
[ -f /etc/brume/conf.d/50-site.toml ] || fail "the upgrade removed the technician's conf.d/50-site.toml"
[ "$(sha256sum /var/lib/brume/outbox.db | cut -d' ' -f1)" = "$SUM" ] || fail "the outbox changed during the upgrade"
ok "upgraded to 1.0.1: still disabled as the admin left it, config edit and outbox kept"

# Self-update (OTA) with rollback, from the installed 1.0.1 (scripts/test-ota.sh).
apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients openssl python3 curl >/dev/null
scripts/test-ota.sh "$V2"

systemctl enable brume.service >/dev/null 2>&1
dpkg -r brume >/dev/null
[ ! -e /usr/bin/brume ] || fail "binary still there after remove"
[ -f /var/lib/brume/outbox.db ] || fail "remove deleted the outbox"
[ -f /etc/brume/gateway.toml ] || fail "remove deleted the config (a conffile)"
ok "removed: data and config kept"

dpkg -P brume >/dev/null
[ ! -e /var/lib/brume ] || fail "purge left /var/lib/brume"
[ ! -e /etc/brume ] || fail "purge left /etc/brume"
[ ! -L "$WANTS" ] || fail "purge left a dangling symlink $WANTS"
getent passwd brume >/dev/null && fail "purge left the brume user"
ok "purged: data, config, user and the enablement symlink gone"
echo "deb lintian/install/disable+upgrade/remove/purge: all checks passed"
