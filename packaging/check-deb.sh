#!/usr/bin/env bash
# Checks the packages packaging/deb.sh built (CI runs this after it):
#  1. every .deb: architecture, file list (binary for the right CPU, unit,
#     sysusers/tmpfiles, conffile, man pages, completions), conffiles, scripts,
#     and the binary's size (at most 8 MB); lintian with no error or warning;
#  2. the shipped unit: `systemd-analyze verify` clean and
#     `systemd-analyze security --offline=true` exposure at most 2.0;
#  3. the amd64 package installed into a scratch root with dpkg --root (maintainer
#     scripts run chrootless, against DPKG_ROOT): user, state directory, enabled
#     unit, a valid config with nothing simulated; then remove (state and config kept) and purge (gone).
# Usage: packaging/check-deb.sh [target/deb]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/deb}
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)-1
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
if ! command -v systemd-analyze >/dev/null; then
  # The analyzers work without a running systemd (CI containers have none).
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

max_bytes=$((8 * 1024 * 1024))
for arch in amd64 arm64 armhf; do
  deb=$dir/weir_${version}_$arch.deb
  [ -f "$deb" ] || fail "$deb is missing (packaging/deb.sh builds it)"
  echo "== $deb ($(du -k "$deb" | cut -f1) KiB)"
  dpkg-deb -c "$deb" | awk '{print $1, $6}'
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb: Architecture is not $arch"
  files=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for f in ./usr/bin/weir ./usr/lib/systemd/system/weir.service ./usr/lib/sysusers.d/weir.conf \
           ./usr/lib/tmpfiles.d/weir.conf ./etc/weir/weir.toml ./usr/share/man/man1/weir.1.gz \
           ./usr/share/man/man1/weir-run.1.gz ./usr/share/bash-completion/completions/weir \
           ./usr/share/zsh/vendor-completions/_weir ./usr/share/fish/vendor_completions.d/weir.fish \
           ./usr/share/doc/weir/copyright ./usr/share/doc/weir/changelog.Debian.gz \
           ./usr/share/lintian/overrides/weir; do
    grep -qx "$f" <<<"$files" || fail "$deb lacks $f"
  done
  ! grep -q '^\./\(var\|run\|tmp\|home\)/' <<<"$files" || fail "$deb ships runtime state"
  ctrl=$scratch/ctrl-$arch
  dpkg-deb -e "$deb" "$ctrl"
  [ "$(cat "$ctrl/conffiles")" = /etc/weir/weir.toml ] || fail "$deb: conffiles is not /etc/weir/weir.toml"
  for s in postinst prerm postrm; do [ -x "$ctrl/$s" ] || fail "$deb: no executable $s"; done
  grep -q '^Depends: libc6 (>= 2\.[0-9]*), adduser$' "$ctrl/control" || fail "$deb: Depends is not libc6 and adduser"
  grep -qx 'Suggests: mosquitto' "$ctrl/control" || fail "$deb: does not suggest mosquitto"
  [ "$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/weir/changelog.Debian.gz | zcat | head -n1 | sed -n 's/^weir (\([^)]*\)).*/\1/p')" = "$version" ] \
    || fail "$deb: changelog.Debian.gz does not start with version $version"
  grep -q '^RestartPreventExitStatus=.*\b78\b' systemd/weir.service || fail "the unit restarts on a bad config (78)"
  x=$scratch/x-$arch
  dpkg-deb -x "$deb" "$x"
  cmp -s "$x/usr/lib/systemd/system/weir.service" systemd/weir.service || fail "$deb: the unit differs from systemd/weir.service"
  machine=$(readelf -h "$x/usr/bin/weir" | sed -n 's/ *Machine: *//p')
  case $arch in amd64) want='X86-64' ;; arm64) want='AArch64' ;; armhf) want='ARM' ;; esac
  [[ $machine == *"$want"* ]] || fail "$deb: binary is for '$machine', not $want"
  bytes=$(stat -c %s "$x/usr/bin/weir")
  [ "$bytes" -le "$max_bytes" ] || fail "$deb: binary is $bytes bytes, over 8 MB"
  sections=$(readelf -S -W "$x/usr/bin/weir")
  ! grep -q '\.symtab' <<<"$sections" || fail "$deb: binary is not stripped"
  # Debian's policy checker (scripts/deps.sh installs it): no error or warning; the
  # overrides shipped in the package say why each one left does not apply.
  rc=0; report=$(lintian --fail-on error,warning "$deb" 2>&1) || rc=$?
  grep -v 'running with root privileges' <<<"$report" || true
  [ "$rc" = 0 ] || fail "$deb: lintian reports errors or warnings (above)"
  echo "   $arch: binary $bytes bytes ($machine), needs $(grep '^Depends' "$ctrl/control")"
done

echo "== scratch root: dpkg --root, the amd64 package"
root=$scratch/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" \
  "$root/var/log" "$root/etc" "$root/bin" "$root/lib/systemd/system"
touch "$root/var/lib/dpkg/status"
dpkg_root() { DPKG_ROOT=$root dpkg --root="$root" --log=/dev/null --force-script-chrootless --force-depends "$@"; }
dpkg_root -i "$dir/weir_${version}_amd64.deb"
status=$(dpkg_root -s weir)
grep -q '^Status: install ok installed' <<<"$status" || fail "not installed"
grep -q '^ /etc/weir/weir.toml ' <<<"$status" || fail "dpkg does not track the conffile"
grep -q '^weir:' "$root/etc/passwd" || fail "no weir user (sysusers)"
grep -q '^i2c:.*weir' "$root/etc/group" || fail "weir not in the i2c group"
weir_uid=$(awk -F: '$1 == "weir" {print $3}' "$root/etc/passwd")
[ "$(stat -c %u "$root/var/lib/weir")" = "$weir_uid" ] || fail "/var/lib/weir not owned by weir (tmpfiles)"
[ -L "$root/etc/systemd/system/multi-user.target.wants/weir.service" ] || fail "service not enabled"
"$root/usr/bin/weir" --version
"$root/usr/bin/weir" config check "$root/etc/weir/weir.toml" | tee "$scratch/check"
# A fresh install publishes nothing simulated under the Pi's real name.
grep -qx '  nothing simulated' "$scratch/check" || fail "the packaged config runs simulated sensors"

echo "== systemd-analyze on the installed unit"
# verify needs the units weir.service refers to (targets) and the commands it runs:
# the host's stand in for what a real system has.
cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
cp -n /bin/kill "$root/bin/kill"
systemd-analyze verify --root="$root" --man=no weir.service 2>&1 | tee "$scratch/verify"
[ ! -s "$scratch/verify" ] || fail "systemd-analyze verify is not clean"
systemd-analyze security --offline=true --root="$root" weir.service 2>&1 | tee "$scratch/security" | tail -n 1
exposure=$(sed -n 's/.*Overall exposure level for weir.service: \([0-9.]*\).*/\1/p' "$scratch/security")
[ -n "$exposure" ] || fail "no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure is above 2.0"

echo "== remove keeps the state and the config, purge deletes them"
echo "# local edit" >> "$root/etc/weir/weir.toml"
echo data > "$root/var/lib/weir/outbox.db"
dpkg_root -r weir
[ ! -e "$root/usr/bin/weir" ] || fail "binary left after remove"
[ -f "$root/var/lib/weir/outbox.db" ] || fail "remove deleted the state"
grep -q '# local edit' "$root/etc/weir/weir.toml" || fail "remove lost the edited conffile"
dpkg_root -P weir
[ ! -e "$root/var/lib/weir" ] || fail "purge left /var/lib/weir"
[ ! -e "$root/etc/weir/weir.toml" ] || fail "purge left the conffile"
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/weir.service" ] || fail "purge left the unit enabled"
echo "check-deb: ok (exposure $exposure)"
