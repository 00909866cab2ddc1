#!/usr/bin/env bash
# Builds weir_<version>_<arch>.deb for Debian architectures amd64, arm64, armhf
# (default: all three) into target/deb/, with dpkg-deb (no cargo-deb needed):
#   /usr/bin/weir                               stripped release binary
#   /usr/lib/systemd/system/weir.service        the hardened unit (systemd/)
#   /usr/lib/sysusers.d/weir.conf               the weir user, i2c/gpio groups
#   /usr/lib/tmpfiles.d/weir.conf               /var/lib/weir
#   /etc/weir/weir.toml                         conffile: packaging/weir-toml.sh (the example,
#                                               device = host name, local sensors commented out)
#   /usr/share/man/man1/weir*.1.gz              man pages   } generated from the
#   /usr/share/{bash-completion,zsh,fish}/...   completions } clap definition (dist/)
#   /usr/share/doc/weir/copyright, changelog.Debian.gz
#   /usr/share/lintian/overrides/weir           each override justified in the file
# and maintainer scripts (packaging/debian/): enable + start on install, stop on
# remove, state deleted only on purge.
#
# ARM binaries are cross-built with Debian's rustc 1.85 (run cross/setup.sh once);
# amd64 with the default toolchain. Usage: packaging/deb.sh [amd64] [arm64] [armhf]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)

version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
debversion="$version-1"
out=$root/target/deb
mkdir -p "$out"

triple() {
  case $1 in
    amd64) echo "" ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "deb: unknown architecture $1 (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
}

build_binary() { # arch -> path of the release binary
  local t; t=$(triple "$1")
  if [ -z "$t" ]; then
    cargo build --release --quiet -p weir --bin weir >&2
    echo "$root/target/release/weir"
  else
    # A subshell: Debian's rustc and the ARM sysroot only for this build.
    ( # shellcheck source=../cross/env.sh
      source cross/env.sh
      cargo build --release --quiet -p weir --bin weir --target "$t" >&2 )
    echo "$root/target/$t/release/weir"
  fi
}

# Man pages, completions and the default config are the same for every arch: make
# them once, on the host.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
cargo run --quiet -p weir-dist -- "$gen/dist" >&2
host_weir=$(build_binary amd64)
packaging/weir-toml.sh "$host_weir" > "$gen/weir.toml"
"$host_weir" config check "$gen/weir.toml" >&2

for arch in "${arches[@]}"; do
  bin=$(build_binary "$arch")
  pkg=$gen/weir_$arch
  rm -rf "$pkg"
  install -D -m 0755 "$bin" "$pkg/usr/bin/weir"
  install -D -m 0644 systemd/weir.service "$pkg/usr/lib/systemd/system/weir.service"
  install -D -m 0644 systemd/sysusers.conf "$pkg/usr/lib/sysusers.d/weir.conf"
  install -D -m 0644 systemd/tmpfiles.conf "$pkg/usr/lib/tmpfiles.d/weir.conf"
  install -D -m 0644 "$gen/weir.toml" "$pkg/etc/weir/weir.toml"
  install -d -m 0755 "$pkg/usr/share/man/man1"
  for m in "$gen"/dist/*.1; do gzip -9n < "$m" > "$pkg/usr/share/man/man1/$(basename "$m").gz"; done
  install -D -m 0644 "$gen/dist/weir.bash" "$pkg/usr/share/bash-completion/completions/weir"
  install -D -m 0644 "$gen/dist/_weir" "$pkg/usr/share/zsh/vendor-completions/_weir"
  install -D -m 0644 "$gen/dist/weir.fish" "$pkg/usr/share/fish/vendor_completions.d/weir.fish"
  install -D -m 0644 packaging/debian/copyright "$pkg/usr/share/doc/weir/copyright"
  install -D -m 0644 packaging/debian/lintian-overrides "$pkg/usr/share/lintian/overrides/weir"
  gzip -9n < packaging/debian/changelog > "$pkg/usr/share/doc/weir/changelog.Debian.gz"
  chmod 0644 "$pkg/usr/share/doc/weir/changelog.Debian.gz"

  # The newest glibc symbol version the binary needs (readelf reads any ELF).
  glibc=$(readelf --dyn-syms -W "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
  size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
  install -d -m 0755 "$pkg/DEBIAN"
  cat > "$pkg/DEBIAN/control" <<EOF
Package: weir
Version: $debversion
Architecture: $arch
Maintainer: The Weir developers <weir@example.invalid>
Installed-Size: $size
Depends: libc6 (>= $glibc), adduser
Recommends: systemd
Suggests: mosquitto
Section: net
Priority: optional
Homepage: https://example.invalid/weir
Description: edge streaming agent: sensors in, windows and alerts out over MQTT
 Weir reads I2C, GPIO, 1-Wire and MQTT sensors on a Raspberry Pi class device,
 groups readings into event-time windows, detects anomalies, and forwards
 window aggregates and alerts upstream over MQTT through a durable SQLite
 outbox. Runs as a hardened systemd service (Type=notify, watchdog).
EOF
  echo /etc/weir/weir.toml > "$pkg/DEBIAN/conffiles"
  for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$pkg/DEBIAN/$s"; done
  ( cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum ) > "$pkg/DEBIAN/md5sums"
  chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"
  deb=$out/weir_${debversion}_$arch.deb
  dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
  echo "$deb"
done
