#!/bin/bash
# The real-kernel test: boots Debian's stock arm64 kernel in QEMU (software
# emulation, no KVM) with a busybox initramfs, loads i2c-stub (with plain-I2C
# transfers, see build-sim-modules.sh) and gpio-sim, presets the stub's registers
# as a BME280 (chip id, calibration, one measurement), and runs the aarch64 `weir`:
#   - `weir sensors scan` must find and name the chip at 0x76,
#   - `weir sensors read` must give the compensated values of Bosch's reference
#     example (25.08 °C, 1006.53 hPa) and 55.00 %RH,
#   - GPIO edges toggled from the simulator side must arrive as readings: a door
#     contact (state) and a pulse counter (rate).
# Usage: cross/vm-hwtest.sh path/to/aarch64/weir        (after cross/build-sim-modules.sh)
# Needs: qemu-system-arm, kmod (depmod, modprobe), cpio, gzip, apt (to fetch the kernel).
set -euo pipefail
BIN=$1
ARCH=arm64
KABI=${KABI:-$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: linux-image-\(.*\)-arm64.*/\1/p' | head -1)}
KPKG=${KPKG:-$(apt-cache show "linux-image-$KABI-arm64:arm64" | sed -n 's/^Version: //p' | head -1)}
WORK=${WORK:-$(cd "$(dirname "$0")/.." && pwd)/.emu}; SMP=${SMP:-2}; MEM=${MEM:-1024}; TIMEOUT=${TIMEOUT:-600}
KVER=$KABI-$ARCH
D=$WORK/$ARCH; DEBS=$WORK/debs; mkdir -p "$D" "$DEBS"
dl() { (cd "$DEBS" && for p in "$@"; do
          ls "${p%%[:=]*}"_*"_${ARCH}.deb" >/dev/null 2>&1 || apt-get download "$p"; done) 2>&1 | grep -v '^W: Download is performed unsandboxed' || true; }
dl "linux-image-$KVER:$ARCH=$KPKG" "busybox-static:$ARCH"

# 1. stock kernel + its modules, plus the simulator modules in updates/
K=$D/kpkg
if [ ! -d "$K/lib/modules/$KVER" ]; then
  rm -rf "$K"; mkdir -p "$K"
  dpkg-deb -x "$DEBS/linux-image-${KVER}_${KPKG}_${ARCH}.deb" "$K"
  dpkg-deb -x "$DEBS"/busybox-static_*_"$ARCH".deb "$K"
fi
mkdir -p "$K/lib/modules/$KVER/updates"
cp "$WORK/kmods/$ARCH"/*.ko "$K/lib/modules/$KVER/updates/"
depmod -b "$K" "$KVER"

# 2. initramfs: busybox, the modules' dependency closure, weir and its glibc
R=$D/initramfs; rm -rf "$R"; mkdir -p "$R"/{bin,dev,proc,sys,tmp,lib,etc,run}
cp "$K/bin/busybox" "$R/bin/busybox"; ln -s busybox "$R/bin/sh"
for m in i2c-dev i2c-stub configfs gpio-sim; do
  modprobe -d "$K" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r f; do
    rel=${f#"$K"}; mkdir -p "$R$(dirname "$rel")"; cp "$f" "$R$rel"; done
done
cp "$K/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$R" "$KVER"
cp "$BIN" "$R/weir"
LIBS=/usr/aarch64-linux-gnu/lib
cp -L $LIBS/ld-linux-aarch64.so.1 "$R/lib/"
for l in libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2; do
  [ -e "$LIBS/$l" ] && cp -L "$LIBS/$l" "$R/lib/"; done
[ "$(id -u)" = 0 ] && mknod -m 600 "$R/dev/console" c 5 1 || true

cat > "$R/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp
mount -t debugfs none /sys/kernel/debug
echo "EMU-INIT kernel=$(uname -r) arch=$(uname -m)"
fail=0; ok() { echo "EMU-OK $*"; }; bad() { echo "EMU-FAIL $*"; fail=1; }
modprobe i2c-dev && modprobe i2c-stub chip_addr=0x76 && modprobe configfs && modprobe gpio-sim \
  && ok modules || bad modules
mount -t configfs none /sys/kernel/config
for a in /sys/bus/i2c/devices/i2c-*; do [ "$(cat $a/name)" = "SMBus stub driver" ] && BUS=${a##*-}; done
# A BME280 at 0x76: chip id, the calibration of Bosch's reference example, and
# one measurement (adc_P 415148, adc_T 519888, adc_H 30000).
preset() { at=$(($1)); shift; for b in "$@"; do r=$(printf 0x%02x $at); i2cset -y $BUS 0x76 $r $b || bad "i2cset $r"; at=$((at+1)); done; }
preset 0xd0 0x60
preset 0x88 0x70 0x6b 0x43 0x67 0x18 0xfc 0x7d 0x8e 0x43 0xd6 0xd0 0x0b 0x27 0x0b 0x8c 0x00 0xf9 0xff 0x8c 0x3c 0xf8 0xc6 0x70 0x17 0x00 0x4b
preset 0xe1 0x6a 0x01 0x00 0x13 0x29 0x03 0x1e
preset 0xf7 0x65 0x5a 0xc0 0x7e 0xed 0x00 0x75 0x30
# A gpio-sim chip, found by its label as on a Pi (gpiochip0 is the board's own).
G=/sys/kernel/config/gpio-sim/weir; mkdir $G $G/bank0; echo 8 > $G/bank0/num_lines
echo weir-sim > $G/bank0/label; echo 1 > $G/live
SIMS=/sys/devices/platform/$(cat $G/dev_name)/$(cat $G/bank0/chip_name)
line() { echo "pull-$2" > $SIMS/sim_gpio$1/pull; }
line 3 down; line 4 down
cat > /weir.toml <<EOF
[agent]
device = "vm"
state_dir = "/tmp/weir"
[[i2c]]
name = "air"
chip = "bme280"
bus = "/dev/i2c-$BUS"
[[gpio]]
name = "door"
chip = "weir-sim"
line = 3
debounce = "1ms"
[[gpio]]
name = "flow"
chip = "weir-sim"
line = 4
mode = "counter"
interval = "1s"
debounce = "2ms"
EOF

/weir sensors scan --config /weir.toml > /tmp/scan 2>&1; cat /tmp/scan
grep -q "0x76  bme280  configured as air" /tmp/scan && ok "weir sensors scan finds the BME280 at 0x76" || bad scan

/weir sensors read air --config /weir.toml --json > /tmp/read 2>&1; cat /tmp/read
near() { awk -v v="$(sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p" /tmp/read)" -v w=$2 'BEGIN { d = v - w; if (v == "" || d > 0.005 || d < -0.005) exit 1 }'; }
near temperature 25.0825 && near pressure 1006.5327 && near humidity 55.0007 \
  && ok "weir sensors read gives the compensated values" || bad "read values"

wait_used() { n=0; until grep -q "weir" /sys/kernel/debug/gpio 2>/dev/null || [ $n -gt 400 ]; do usleep 50000; n=$((n+1)); done; }
# Door contact: the level at start, then each debounced edge.
/weir sensors read door --config /weir.toml --count 3 --timeout 60s > /tmp/door 2>&1 &
P=$!; wait_used; usleep 300000
line 3 up; usleep 300000; line 3 down
wait $P && ok "door readings" || bad "door exit"
cat /tmp/door
[ "$(awk '/door\/state/ {printf "%s", $3}' /tmp/door)" = "010" ] && ok "GPIO edges arrive as state readings 0,1,0" || bad "door states"
# Flow meter: 5 pulses, counted into rates per 1 s interval.
/weir sensors read flow --config /weir.toml --count 4 --timeout 60s > /tmp/flow 2>&1 &
P=$!; wait_used; usleep 200000
for i in 1 2 3 4 5; do line 4 up; usleep 30000; line 4 down; usleep 30000; done
wait $P || bad "flow exit"
cat /tmp/flow
[ "$(awk '/flow\/rate/ {s += $3} END {print s}' /tmp/flow)" = 5 ] && ok "GPIO pulses arrive as a rate (5 pulses)" || bad "flow pulses"

[ $fail = 0 ] && echo "EMU-RESULT PASS" || echo "EMU-RESULT FAIL"
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$D/initramfs.cpio.gz"

# 3. boot (TCG: /dev/kvm here is a nested-virtualisation device stock kernels hang on)
timeout "$TIMEOUT" qemu-system-aarch64 -M virt -cpu "${CPU:-cortex-a72}" -smp "$SMP" -m "$MEM" \
  -nographic -no-reboot -nic none -kernel "$K/boot/vmlinuz-$KVER" -initrd "$D/initramfs.cpio.gz" \
  -append "console=ttyAMA0 panic=-1 loglevel=3" </dev/null | tee "$D/boot.log" | tr -d '\r' \
  | grep -aE '^(EMU-|0x|/dev|\{|door|flow|  0x)' || true
grep -aq 'EMU-RESULT PASS' "$D/boot.log"
