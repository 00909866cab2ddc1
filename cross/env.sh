# Source this after cross/setup.sh: points cargo at Debian's rustc 1.85, the
# project-local ARM sysroot, the cross linkers and QEMU as the test runner.
# The sysroot must be an absolute path and apply to target units only (build
# scripts and proc macros use the host std), hence the per-target RUSTFLAGS.
_weir_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--sysroot=$_weir_root/.cross-sysroot/usr"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="--sysroot=$_weir_root/.cross-sysroot/usr"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -L /usr/arm-linux-gnueabihf"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
unset _weir_root
