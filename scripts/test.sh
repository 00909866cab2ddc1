#!/usr/bin/env bash
# The full test suite, as CI runs it (.ci/run calls this):
# dependencies, formatting, lints, the rust 1.85 build check, and every test;
# then the ARM builds with their tests under QEMU, and the .deb packages.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== rust 1.85 (Debian rustc-web, the ARM toolchain) builds the workspace"
RUSTC=/usr/bin/rustc cargo check --workspace --all-targets --target-dir target/msrv --quiet
echo "== cargo test"
cargo test --workspace
echo "== ARM (aarch64, armv7): release builds, tests under QEMU, end to end with the ARM weir"
cross/ci.sh
echo "== .deb for amd64, arm64, armhf: build, check contents and unit, install into a scratch root"
packaging/deb.sh
packaging/check-deb.sh
echo "== real kernel: aarch64 weir in QEMU against i2c-stub (BME280) and gpio-sim"
cross/hwtest.sh
echo "== power cuts: aarch64 weir in QEMU, its state on an ext4 virtual disk, SIGKILLed 10 times under load"
cross/powercut.sh 10
echo "== CI: all green in $SECONDS s"
