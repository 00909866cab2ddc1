#!/bin/bash
# Build i2c-stub (+ I2C_RDWR support), gpio-sim and gpio-mockup as out-of-tree
# modules for Debian bookworm's 6.1 kernel, for arm64 and/or amd64, without
# installing anything into / (everything is extracted under $WORK).
# Usage: build-sim-modules.sh [arm64|amd64]...     (default: arm64)
# Host needs: apt (bookworm, 'dpkg --add-architecture arm64' + apt-get update), make, gcc-12,
#             gcc-aarch64-linux-gnu (arm64 cross), xz-utils. No flex/bison/bc, no root for the build.
set -euo pipefail
# Kernel: the archive's current Debian arm64 kernel unless KABI/KPKG are given
# (Debian drops old kernel ABIs at point releases, so never hard-code them).
KABI=${KABI:-$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: linux-image-\(.*\)-arm64.*/\1/p' | head -1)}
KPKG=${KPKG:-$(apt-cache show "linux-image-$KABI-arm64:arm64" | sed -n 's/^Version: //p' | head -1)}
WORK=${WORK:-$(cd "$(dirname "$0")/.." && pwd)/.emu}
ARCHES=${*:-arm64}   # amd64 needs its own KABI/KPKG (its kernel version differs)
DEBS=$WORK/debs; KB=$WORK/kbuild
mkdir -p "$DEBS" "$KB/root"

dl() { (cd "$DEBS" && for p in "$@"; do
          ls "${p%%[:=]*}"_*.deb >/dev/null 2>&1 || apt-get download "$p"; done) 2>&1 | grep -v '^W: Download is performed unsandboxed' || true; }

dl "linux-headers-$KABI-common=$KPKG" "linux-kbuild-6.1:amd64=$KPKG" "linux-source-6.1=$KPKG"
for a in $ARCHES; do dl "linux-headers-$KABI-$a:$a=$KPKG"; done

# 1. headers + host kbuild tools extracted into $KB/root (symlinks inside are relative)
for d in "$DEBS"/linux-headers-*.deb "$DEBS"/linux-kbuild-6.1_*.deb; do dpkg-deb -x "$d" "$KB/root"; done
SRCROOT=$KB/root/usr/src
for a in $ARCHES; do   # the flavour Makefile includes an absolute /usr/src path: point it at our copy
  sed -i "s|^include .*/linux-headers-$KABI-common/Makefile|include $SRCROOT/linux-headers-$KABI-common/Makefile|" \
      "$SRCROOT/linux-headers-$KABI-$a/Makefile"
done

# 2. the 4 source files we need from linux-source-6.1
S=$KB/src/linux-source-6.1
if [ ! -f "$S/kernel/irq/irq_sim.c" ]; then
  mkdir -p "$KB/src"
  dpkg-deb --fsys-tarfile "$DEBS"/linux-source-6.1_*.deb | tar -xO ./usr/src/linux-source-6.1.tar.xz |
    tar -xJ -C "$KB/src" linux-source-6.1/drivers/i2c/i2c-stub.c linux-source-6.1/drivers/gpio/gpio-sim.c \
      linux-source-6.1/drivers/gpio/gpio-mockup.c linux-source-6.1/drivers/gpio/gpiolib.h \
      linux-source-6.1/kernel/irq/irq_sim.c
fi

cat > "$KB/i2c-stub-rdwr.snippet" <<'SNIP'
/*
 * Added for CI (not upstream): plain I2C transfers (I2C_RDWR ioctl,
 * i2c_transfer()) on top of the same register file, so embedded-hal
 * drivers (write / write_read) work. A write sets the register pointer
 * from its first byte and stores any further bytes at pointer++; a read
 * returns bytes from pointer++ (auto-increment, like most sensors).
 */
static int stub_master_xfer(struct i2c_adapter *adap, struct i2c_msg *msgs,
			    int num)
{
	int m, j;

	for (m = 0; m < num; m++) {
		struct i2c_msg *msg = &msgs[m];
		struct stub_chip *chip = NULL;
		u16 *wordp;

		for (j = 0; j < stub_chips_nr; j++) {
			if (msg->addr == chip_addr[j]) {
				chip = stub_chips + j;
				break;
			}
		}
		if (!chip)
			return -ENXIO;	/* no ACK */

		if (msg->flags & I2C_M_RD) {
			for (j = 0; j < msg->len; j++) {
				wordp = stub_get_wordp(chip, chip->pointer++);
				msg->buf[j] = *wordp & 0xff;
			}
		} else if (msg->len) {
			chip->pointer = msg->buf[0];
			for (j = 1; j < msg->len; j++) {
				wordp = stub_get_wordp(chip, chip->pointer++);
				*wordp = (*wordp & 0xff00) | msg->buf[j];
			}
		}
	}
	return num;
}

SNIP

for a in $ARCHES; do
  M=$KB/mod-$a; rm -rf "$M"; mkdir -p "$M"
  cp "$S/drivers/gpio/gpiolib.h" "$M/"
  cp "$S/drivers/gpio/gpio-sim.c" "$M/gpio-sim-main.c"
  cp "$S/drivers/gpio/gpio-mockup.c" "$M/gpio-mockup-main.c"
  # Debian has CONFIG_IRQ_SIM=n: link a private copy of irq_sim.c into each module.
  # irq_to_desc() is not exported -> use generic_handle_irq(); drop the exports.
  for m in gsim gmock; do
    sed -e 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' \
        -e '/^EXPORT_SYMBOL_GPL/d' "$S/kernel/irq/irq_sim.c" > "$M/irq_sim_$m.c"
  done
  # i2c-stub + master_xfer (I2C_RDWR) so embedded-hal I2c::write_read works
  awk -v snip="$KB/i2c-stub-rdwr.snippet" '
    /^static const struct i2c_algorithm smbus_algorithm = \{/ {
        while ((getline l < snip) > 0) print l; print; print "\t.master_xfer\t= stub_master_xfer,"; next }
    /^\treturn STUB_FUNC_ALL & functionality;/ {
        print "\treturn (STUB_FUNC_ALL & functionality) | I2C_FUNC_I2C;"; next }
    { print }' "$S/drivers/i2c/i2c-stub.c" > "$M/i2c-stub.c"
  grep -q stub_master_xfer "$M/i2c-stub.c"
  cat > "$M/Kbuild" <<'KB'
obj-m := i2c-stub.o gpio-sim.o gpio-mockup.o
gpio-sim-y    := gpio-sim-main.o irq_sim_gsim.o
gpio-mockup-y := gpio-mockup-main.o irq_sim_gmock.o
KB
  case $a in
    arm64) X="ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-" ;;
    amd64) X="" ;;
  esac
  make -s -C "$SRCROOT/linux-headers-$KABI-$a" M="$M" $X modules 2>&1 | grep -v 'Skipping BTF' || true
  mkdir -p "$WORK/kmods/$a"; cp "$M"/*.ko "$WORK/kmods/$a/"
  ls -l "$WORK/kmods/$a"
done
