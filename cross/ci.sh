#!/usr/bin/env bash
# The ARM part of CI (scripts/test.sh calls it), for aarch64 and armv7:
#   1. release binaries, cross-built with Debian's rustc 1.85 (cross/setup.sh);
#   2. the agent's and the sensors' tests, built for ARM and run under QEMU user
#      emulation (release profile: it shares the compiled dependencies with step 1
#      and tests the code that ships; doctests stay host-only);
#   3. end to end: the ARM `weir` under QEMU against a real Mosquitto on the host,
#      driven by the host's end-to-end tests (WEIR_BIN + WEIR_RUNNER): panes and
#      alerts arriving upstream, SIGKILL durability, systemd notifications, reload.
# Prints the stripped binary sizes and the time each step took.
# Usage: cross/ci.sh [aarch64|armv7 ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)

cross/setup.sh >/dev/null

triple() { case $1 in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; *) echo "unknown target $1" >&2; exit 2 ;; esac; }
qemu() { case $1 in aarch64) echo "qemu-aarch64-static -L /usr/aarch64-linux-gnu" ;; armv7) echo "qemu-arm-static -L /usr/arm-linux-gnueabihf" ;; esac; }
step() { # name, command...: runs it and says how long it took
  local name=$1 t0=$SECONDS; shift
  echo "== $name"
  "$@"
  echo "   ($name: $((SECONDS - t0)) s)"
}
# Debian's rustc and the ARM sysroot for cargo runs in a subshell; the host
# steps keep the default toolchain and its build cache.
arm_cargo() { ( source cross/env.sh; cargo "$@" ); }

for t in "${targets[@]}"; do
  tr=$(triple "$t")
  step "$t: release build" arm_cargo build --release --quiet -p weir --bin weir --target "$tr"
  bin=target/$tr/release/weir
  echo "   $t: stripped weir is $(stat -c %s "$bin") bytes ($(readelf -h "$bin" | sed -n 's/ *Machine: *//p'))"
  step "$t: agent and sensors tests under QEMU" \
    arm_cargo test --release --quiet -p weir -p weir-sensors --target "$tr" --lib --bins --tests
done

# The host's end-to-end test binaries, driving the ARM binaries through QEMU.
cargo test --quiet -p weir-tests --no-run
# The long durability runs (20 SIGKILLs, 86,000 identical readings past a
# packet-id wrap with 5 SIGKILLs, a 100k-row outage, the budget, a full and a
# read-only disk: minutes each under QEMU) go on aarch64 only, to
# keep CI short; armv7 runs every other end-to-end test. They exercise the same
# code paths, and armv7 differs from aarch64 in word size, which the rest covers.
# Home Assistant discovery (a Home Assistant start and stop) goes with them.
heavy=(--skip twenty_sigkills --skip identical_plain_readings --skip after_an_outage --skip a_one_mib_outbox
       --skip a_full_disk --skip a_filesystem_remounted --skip weir_devices_sensors_and_alerts_appear_in_home_assistant)
# The PostgreSQL sink's tests are about `weir-sink`, a server program built for the
# host; the host run covers them.
host_only=(--skip a_fleet_lands_in_postgres --skip a_database_migrated_by_a_newer_sink)
for t in "${targets[@]}"; do
  tr=$(triple "$t")
  skip=("${host_only[@]}")
  [ "$t" = aarch64 ] || skip+=("${heavy[@]}")
  step "$t: end to end, ARM weir under QEMU, host Mosquitto" \
    env WEIR_BIN="$PWD/target/$tr/release/weir" WEIR_RUNNER="$(qemu "$t")" \
    cargo test --quiet -p weir-tests -- "${skip[@]}"
done
