#!/usr/bin/env bash
# The power-cut test: the aarch64 `weir` in an emulated ARM machine
# (qemu-system-aarch64, Debian's stock arm64 kernel, busybox), its state directory
# on its own virtual disk (ext4), ingesting QoS 2 from a Mosquitto on the host,
# while QEMU is killed with SIGKILL at random moments and booted again on the same
# disk. What the guest had not written to its disk (its page cache) is gone at
# each cut, as at a power cut; see docs/storage.md, "Power cuts", for the cache
# mode and what it does and does not model. The checks are in
# tests/tests/powercut.rs: every reading counted exactly once in its window
# upstream, and `weir outbox verify` passing at every boot.
#
# Usage: cross/powercut.sh [CUTS]          (default 12)
#   POWERCUT_SYNCHRONOUS=OFF cross/powercut.sh   the same against an outbox whose
#                                  commits never fsync: the test must then fail.
#   POWERCUT_SEED=N                the random moments (default: a fixed seed).
#   WEIR_BIN=path                  an aarch64 weir already built (default: build it).
#   POWERCUT_WORK=dir              where the kernel and initramfs go (default .emu/powercut).
# Needs: cross/setup.sh's toolchain, qemu-system-arm, kmod, cpio, e2fsprogs, mosquitto.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
CUTS=${1:-12}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

cross/setup.sh >/dev/null
missing=()
command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || missing+=(kmod)
command -v cpio >/dev/null || missing+=(cpio)
command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ]; then
  echo "powercut: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin:/sbin

if [ -z "${WEIR_BIN:-}" ]; then
  ( source cross/env.sh && cargo build --quiet --release --target aarch64-unknown-linux-gnu -p weir --bin weir )
  WEIR_BIN=$root/target/aarch64-unknown-linux-gnu/release/weir
fi

# 1. Debian's arm64 kernel (the archive's current one) and busybox, cached in .emu.
ARCH=arm64
KABI=${KABI:-$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: linux-image-\(.*\)-arm64.*/\1/p' | head -1)}
KPKG=${KPKG:-$(apt-cache show "linux-image-$KABI-arm64:arm64" | sed -n 's/^Version: //p' | head -1)}
KVER=$KABI-$ARCH
WORK=$root/.emu; D=${POWERCUT_WORK:-$WORK/powercut}; DEBS=$WORK/debs; mkdir -p "$D" "$DEBS"
(cd "$DEBS" && for p in "linux-image-$KVER:$ARCH=$KPKG" "busybox-static:$ARCH"; do
   ls "${p%%[:=]*}"_*"_${ARCH}.deb" >/dev/null 2>&1 || apt-get download "$p"; done) 2>&1 \
  | grep -v '^W: Download is performed unsandboxed' || true
K=$D/kpkg
if [ ! -d "$K/lib/modules/$KVER" ]; then
  rm -rf "$K"; mkdir -p "$K"
  dpkg-deb -x "$DEBS/linux-image-${KVER}_${KPKG}_${ARCH}.deb" "$K"
  dpkg-deb -x "$DEBS"/busybox-static_*_"$ARCH".deb "$K"
  depmod -b "$K" "$KVER"
fi

# 2. initramfs: busybox, the modules for the virtio disk and network, ext4 and
#    fw_cfg (which carries weir.toml in), weir and its glibc.
R=$D/initramfs; rm -rf "$R"; mkdir -p "$R"/{bin,dev,proc,sys,tmp,lib,etc,state}
cp "$K/bin/busybox" "$R/bin/busybox"; ln -s busybox "$R/bin/sh"
MODS="virtio_pci virtio_blk virtio_net crc32c_generic ext4 qemu_fw_cfg"
for m in $MODS; do
  modprobe -d "$K" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r f; do
    rel=${f#"$K"}; mkdir -p "$R$(dirname "$rel")"; cp "$f" "$R$rel"; done
done
cp "$K/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$R" "$KVER"
cp "$WEIR_BIN" "$R/weir"
LIBS=/usr/aarch64-linux-gnu/lib
cp -L $LIBS/ld-linux-aarch64.so.1 "$R/lib/"
for l in libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2; do
  [ -e "$LIBS/$l" ] && cp -L "$LIBS/$l" "$R/lib/"; done

# The guest's /init: every line the test reads starts with PC-. Kernel parameters
# of the form NAME=value (WEIR_TEST_SQLITE_SYNCHRONOUS) reach init's environment.
cat > "$R/init" <<INIT
#!/bin/sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp
for m in $MODS; do modprobe \$m || echo "PC-FAIL modprobe \$m"; done
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
n=0; until [ -b /dev/vda ] || [ \$n -gt 100 ]; do usleep 50000; n=\$((n+1)); done
# ext4 replays its journal here: what the guest had flushed before the cut.
mount -t ext4 /dev/vda /state || { echo "PC-FAIL mount"; poweroff -f; }
echo "PC-MOUNTED \$(date -u +%H:%M:%S)"
cp /sys/firmware/qemu_fw_cfg/by_name/opt/weir.toml/raw /weir.toml || echo "PC-FAIL no weir.toml"
db=\$(sed -n 's/^state_dir = "\(.*\)"/\1/p' /weir.toml)/outbox.db
if [ -e "\$db" ]; then
  /weir outbox verify --config /weir.toml > /tmp/verify 2>&1; rc=\$?
  echo "PC-VERIFY rc=\$rc \$(tr '\n' ' ' < /tmp/verify)"
else
  echo "PC-VERIFY none (no outbox yet)"
fi
[ -n "\${WEIR_TEST_SQLITE_SYNCHRONOUS:-}" ] && export WEIR_TEST_SQLITE_SYNCHRONOUS
echo "PC-START"
# Through a pipe: weir's log without terminal colours.
{ /weir run --config /weir.toml 2>&1; echo "PC-EXIT rc=\$?"; } | cat
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$D/initramfs.cpio.gz"

# 3. the run: the host's end-to-end test drives QEMU, the brokers and the checks.
cargo test --quiet -p weir-tests --no-run
t0=$SECONDS
env WEIR_POWERCUT_KERNEL="$K/boot/vmlinuz-$KVER" WEIR_POWERCUT_INITRD="$D/initramfs.cpio.gz" \
  WEIR_POWERCUT_CUTS="$CUTS" WEIR_POWERCUT_SYNCHRONOUS="${POWERCUT_SYNCHRONOUS:-}" \
  WEIR_POWERCUT_SEED="${POWERCUT_SEED:-}" \
  cargo test --quiet -p weir-tests --test powercut -- --ignored --nocapture
echo "powercut: $CUTS cuts, $((SECONDS - t0)) s"
