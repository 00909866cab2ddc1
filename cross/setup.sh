#!/usr/bin/env bash
# Prepares cross-compilation for Raspberry Pi (aarch64, armv7) on a Debian 12 host,
# without Docker, idempotently:
#   - Debian's rustc-web 1.85 (held) and its ARM standard libraries, extracted into a
#     project-local sysroot (.cross-sysroot), nothing written to /usr/lib/rustlib;
#   - the cross linkers and qemu-user-static (to run ARM binaries and tests).
# Then:  source cross/env.sh && cargo build --release --target aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

# Outputs are captured before matching: with pipefail, `cmd | grep -q` fails at
# random when grep exits before cmd has written everything (SIGPIPE).
need=()
foreign=$(dpkg --print-foreign-architectures)
for a in arm64 armhf; do grep -qx "$a" <<<"$foreign" || { $SUDO dpkg --add-architecture "$a"; need+=(update); }; done
for c in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64-static qemu-arm-static; do command -v "$c" >/dev/null || need+=("$c"); done
rustc_version=$(/usr/bin/rustc --version 2>/dev/null || true)
[[ $rustc_version == "rustc 1.85."* ]] || need+=(rustc)
if [ ${#need[@]} -gt 0 ]; then
  # bookworm-security's armhf index sometimes reports a size mismatch: harmless here.
  $SUDO apt-get update -qq || true
  v=$(apt-cache madison rustc-web | awk '$3 ~ /^1\.85\./ {print $3; exit}')
  $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "rustc-web=$v" "libstd-rust-web-dev=$v" "libstd-rust-web-1.85=$v" \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user-static >/dev/null
  $SUDO apt-mark hold rustc-web libstd-rust-web-dev libstd-rust-web-1.85 >/dev/null
fi

# The ARM std must be the very version of the host rustc-web.
sysroot=$root/.cross-sysroot
v=$(dpkg-query -W -f='${Version}' rustc-web)
mkdir -p "$sysroot/debs"
if [ "$(cat "$sysroot/version" 2>/dev/null)" != "$v" ]; then
  ( cd "$sysroot/debs" && rm -f ./*.deb
    for a in arm64 armhf; do apt-get download "libstd-rust-web-dev:$a=$v" 2>&1 | grep -v unsandboxed || true; done )
  rm -rf "$sysroot/usr"
  for d in "$sysroot"/debs/libstd-rust-web-dev_*.deb; do
    dpkg-deb --fsys-tarfile "$d" | tar -x -C "$sysroot" --wildcards './usr/lib/rustlib/*'
  done
  echo "$v" > "$sysroot/version"
fi
ls "$sysroot/usr/lib/rustlib"
echo "cross: ready; now: source cross/env.sh"
