#!/usr/bin/env bash
# Inspects the Debian package scripts/deb.sh built: `scripts/deb-check.sh DEB`.
#  - `dpkg-deb -c`: fails on a missing path (the binary, the unit, the conffile, every man page,
#    the completions, the docs);
#  - `dpkg-deb -I`: the conffile is /etc/default/wmgwd2, and the postinst neither enables nor
#    starts the unit;
#  - lintian (installed with apt, as root, when missing): fails on any error or warning; the
#    info tags it shows are accepted (docs/operations.md says which and why).
# `--install DEB` then installs it on THIS machine (.ci/run does, only with CI=true): the unit is
# not enabled, the binary answers, the man pages are found, the unit verifies; then purges it.
set -euo pipefail
cd "$(dirname "$0")/.."

install=false
if [ "${1:-}" = --install ]; then
  install=true
  shift
fi
deb=${1:?usage: scripts/deb-check.sh [--install] DEB}
fail() {
  echo "deb-check: $*" >&2
  exit 1
}

echo "== dpkg-deb -c $deb"
listing=$(dpkg-deb -c "$deb")
echo "$listing"
paths=$(awk '{print $NF}' <<<"$listing")
pages=(wmgwd2 wmgwd2-status wmgwd2-plan wmgwd2-drain wmgwd2-undrain wmgwd2-check)
for p in \
  usr/sbin/wmgwd2 \
  usr/lib/systemd/system/wmgwd2.service \
  etc/default/wmgwd2 \
  "${pages[@]/#/usr/share/man/man8/}" \
  usr/share/bash-completion/completions/wmgwd2 \
  usr/share/zsh/vendor-completions/_wmgwd2 \
  usr/share/fish/vendor_completions.d/wmgwd2.fish \
  usr/share/doc/wmgwd2/copyright \
  usr/share/doc/wmgwd2/changelog.Debian.gz \
  usr/share/doc/wmgwd2/README.md \
  usr/share/doc/wmgwd2/operations.md \
  usr/share/doc/wmgwd2/security.md \
  usr/share/doc/wmgwd2/examples/wmgwd2.alerts.yml \
  usr/share/doc/wmgwd2/examples/frr.conf.example \
  usr/share/lintian/overrides/wmgwd2; do
  case $p in usr/share/man/*) p=$p.8.gz ;; esac
  grep -qxF "./$p" <<<"$paths" || fail "$p is missing from $deb"
done
grep -Eq '^-rwxr-xr-x (root/root|0/0) .* \./usr/sbin/wmgwd2$' <<<"$listing" ||
  fail "usr/sbin/wmgwd2 is not root's with mode 755"

echo "== dpkg-deb -I $deb"
dpkg-deb -I "$deb"
echo "-- conffiles"
dpkg-deb -I "$deb" conffiles
[ "$(dpkg-deb -I "$deb" conffiles)" = /etc/default/wmgwd2 ] ||
  fail "the conffiles are not exactly /etc/default/wmgwd2"
# debhelper's --no-enable --no-start snippets: enable only a unit that was enabled before, on an
# upgrade (`debian-installed` guards it: without that guard `was-enabled` is true on a first
# installation), and restart only one that runs (try-restart, on upgrade).
postinst=$(dpkg-deb -I "$deb" postinst)
if grep -Eq 'deb-systemd-invoke (start|restart) |systemctl( --[a-z]+)* (enable|start) ' <<<"$postinst" ||
  { grep -q 'deb-systemd-helper enable' <<<"$postinst" &&
    ! grep -q 'if deb-systemd-helper debian-installed wmgwd2.service' <<<"$postinst"; }; then
  fail "the postinst enables or starts the unit"
fi

echo "== lintian"
if ! command -v lintian >/dev/null && [ "$(id -u)" -eq 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian >/dev/null
fi
lintian --display-info --pedantic --fail-on error,warning "$deb"
echo "lintian: no error, no warning"

"$install" || exit 0

echo "== install $deb"
export DEBIAN_FRONTEND=noninteractive
trap 'apt-get purge -y -qq wmgwd2 >/dev/null 2>&1 || true' EXIT
apt-get install -y -qq "$(realpath "$deb")" >/dev/null
enabled=$(systemctl is-enabled wmgwd2.service 2>&1 || true)
echo "systemctl is-enabled wmgwd2: $enabled"
[ "$enabled" = disabled ] || fail "the unit is '$enabled' after installation, not disabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/wmgwd2.service ] ||
  fail "installation enabled the unit"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$(wmgwd2 --version)" = "wmgwd2 $version" ] || fail "wmgwd2 --version: $(wmgwd2 --version)"
for page in "${pages[@]}"; do
  [ "$(man -w "$page")" = "/usr/share/man/man8/$page.8.gz" ] || fail "man -w $page"
done
grep -q '^ /etc/default/wmgwd2 ' <<<"$(dpkg-query -W -f '${Conffiles}\n' wmgwd2)" ||
  fail "dpkg does not hold /etc/default/wmgwd2 as a conffile"
# The installed unit: its ExecStart binary and its Documentation= man pages exist.
systemd-analyze verify /usr/lib/systemd/system/wmgwd2.service

echo "== purge"
apt-get purge -y -qq wmgwd2 >/dev/null
trap - EXIT
for p in /usr/sbin/wmgwd2 /etc/default/wmgwd2 /usr/lib/systemd/system/wmgwd2.service; do
  [ ! -e "$p" ] || fail "$p is left after purge"
done
echo "deb-check: installed disabled, verified, purged"
