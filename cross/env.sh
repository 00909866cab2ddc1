# Source this after cross/setup.sh:  source cross/env.sh
# Then `cargo build --target aarch64-unknown-linux-gnu` (or armv7-unknown-linux-gnueabihf)
# and `cargo test --target ...` (run under QEMU) just work in this shell.
#
# Linkers, QEMU runners and the C cross compilers are in .cargo/config.toml. Two
# things cannot be: the compiler must be Debian's rustc 1.85 (the version of the
# ARM standard library Debian ships), and the sysroot holding that library must
# be an absolute path (cargo hands rustflags to rustc verbatim, from each crate's
# own directory), applied to target units only: build scripts and proc macros use
# the host std, hence the per-target RUSTFLAGS.
_weir_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
if [ ! -d "$_weir_root/.cross-sysroot/usr/lib/rustlib/aarch64-unknown-linux-gnu" ]; then
  echo "cross/env.sh: no ARM sysroot yet; run cross/setup.sh first" >&2
fi
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--sysroot=$_weir_root/.cross-sysroot/usr"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="--sysroot=$_weir_root/.cross-sysroot/usr"
unset _weir_root
