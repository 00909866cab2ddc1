#!/usr/bin/env bash
# The real-kernel hardware test, as CI runs it (scripts/test.sh calls this):
# an aarch64 `weir`, cross-built with Debian's rustc 1.85, in an emulated ARM
# machine running Debian's own arm64 kernel against i2c-stub (preset as a BME280)
# and gpio-sim. See cross/vm-hwtest.sh for what is checked.
#   1. the cross toolchain (cross/setup.sh) and qemu-system-arm, kmod, cpio;
#   2. cargo build --release --target aarch64-unknown-linux-gnu -p weir;
#   3. the simulator modules for the archive's current arm64 kernel (cached in .emu);
#   4. boot and check. About 20 s once built; the cold cross build takes minutes.
# WEIR_SKIP_HWTEST=1 skips it (e.g. on a machine without apt).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${WEIR_SKIP_HWTEST:-0}" = 1 ]; then echo "hwtest: skipped (WEIR_SKIP_HWTEST=1)"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

cross/setup.sh >/dev/null
missing=()
command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || missing+=(kmod)
command -v cpio >/dev/null || missing+=(cpio)
if [ ${#missing[@]} -gt 0 ]; then
  echo "hwtest: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# shellcheck source=env.sh
source cross/env.sh
cargo build --quiet --release --target aarch64-unknown-linux-gnu -p weir
bin=target/aarch64-unknown-linux-gnu/release/weir

# The modules must match the archive's current kernel: rebuild when it moves on.
kabi=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: linux-image-\(.*\)-arm64.*/\1/p' | head -1)
if [ "$(cat .emu/kmods/arm64/kabi 2>/dev/null)" != "$kabi" ] || [ ! -f .emu/kmods/arm64/i2c-stub.ko ]; then
  cross/build-sim-modules.sh arm64 >/dev/null
  echo "$kabi" > .emu/kmods/arm64/kabi
fi
cross/vm-hwtest.sh "$bin"
