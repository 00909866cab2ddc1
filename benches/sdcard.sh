#!/usr/bin/env bash
# Bytes written to disk and fsyncs per day by `weir run` under a stated load, for SD-card wear.
#
#   benches/sdcard.sh [SENSORS] [SECONDS] [WINDOW] [FORMAT] [INTERVAL]
#   benches/sdcard.sh 50 300 10s json 1s     # the defaults
#
# Starts a private Mosquitto on a free port (upstream up, PUBACKs flowing), then the real
# weir with SENSORS simulated sensors each sampling every INTERVAL, WINDOW tumbling windows
# and a threshold detector, its state directory on a disk-backed filesystem (not tmpfs:
# write_bytes counts nothing there) and its control socket in STATE_DIR/run (never the
# system's /run/weir/control.sock). After a 20 s warm-up it reads write_bytes from
# /proc/<pid>/io at the start and the end of SECONDS and extrapolates to a day.
#
# write_bytes is what the process caused to be sent to the block device: a page is counted
# when it goes from clean to dirty, so rewriting a page that is already dirty (SQLite
# appending to the same WAL page before the kernel writes it back) counts once, as it
# does on the card. It includes the WAL, the database file at checkpoints, and any other
# file weir writes; not the filesystem's own journal.
#
# Environment: WEIR_BIN (default: builds target/release/weir), STATE_DIR (default:
# target/sdcard-bench; must not be tmpfs), WARMUP (seconds, default 20), CHECKPOINT (sets
# [agent] checkpoint_interval, e.g. 1s for the strict profile; default: weir's default),
# SOURCE (sim, the default: simulated local sensors; mqtt: the sensors publish plain values
# with QoS 1 to a local Mosquitto set as the README recommends, which Weir ingests, and the
# script reports that broker's own writes and fsyncs too), AUTOSAVE (that broker's
# autosave_interval in seconds, default 1800, Mosquitto's default), INFLIGHT (with
# SOURCE=mqtt: that broker's max_inflight_messages and Weir's [ingest] broker_max_inflight,
# default 1000 as the README recommends; 20 is Mosquitto's default).
set -euo pipefail
cd "$(dirname "$0")/.."

SENSORS=${1:-50}
SECONDS_RUN=${2:-300}
WINDOW=${3:-10s}
FORMAT=${4:-json}
INTERVAL=${5:-1s}
WARMUP=${WARMUP:-20}
STATE_DIR=${STATE_DIR:-$PWD/target/sdcard-bench}

if [ -z "${WEIR_BIN:-}" ]; then
    cargo build --release --quiet -p weir --bin weir
    WEIR_BIN=$PWD/target/release/weir
fi

fstype=$(stat -f -c %T "$(dirname "$STATE_DIR")")
if [ "$fstype" = tmpfs ]; then
    echo "error: $STATE_DIR is on tmpfs; write_bytes would be 0. Set STATE_DIR to a disk." >&2
    exit 2
fi

rm -rf "$STATE_DIR"
mkdir -p "$STATE_DIR/state"
chmod 755 "$STATE_DIR"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$STATE_DIR/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest none
EOF

SOURCE=${SOURCE:-sim}
lport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$STATE_DIR/local"
# The local broker as the README recommends (persistence, unlimited queue, QoS 2 to Weir).
cat >"$STATE_DIR/local.conf" <<EOF
listener $lport 127.0.0.1
allow_anonymous true
persistence true
persistence_location $STATE_DIR/local/
autosave_interval ${AUTOSAVE:-1800}
max_queued_messages 0
upgrade_outgoing_qos true
max_inflight_messages ${INFLIGHT:-1000}
set_tcp_nodelay true
log_dest none
EOF
cp_line=
[ -n "${CHECKPOINT:-}" ] && cp_line="checkpoint_interval = \"$CHECKPOINT\""
{
    cat <<EOF
[agent]
device = "sdbench"
state_dir = "$STATE_DIR/state"
# Its own control socket: the default, /run/weir/control.sock, belongs to an installed weir
# or a test run on the same machine.
runtime_dir = "$STATE_DIR/run"
$cp_line

[engine]
max_out_of_orderness = "1s"
allowed_lateness = "0s"
[engine.window]
size = "$WINDOW"

[uplink]
host = "127.0.0.1"
port = $port
format = "$FORMAT"
status_interval = "1s"

[[detector]]
name = "hot"
kind = "threshold"
sensor = "*"
metric = "temperature"
high = 30.0
EOF
    if [ "$SOURCE" = mqtt ]; then
        printf '\n[ingest]\nhost = "127.0.0.1"\nport = %d\nbroker_max_inflight = %d\n[[ingest.topic]]\nfilter = "sensors/+/+"\nsensor = "{2}"\nmetric = "{3}"\n' "$lport" "${INFLIGHT:-1000}"
    else
        for i in $(seq 1 "$SENSORS"); do
            printf '\n[[sim]]\nname = "s%03d"\nmetric = "temperature"\ninterval = "%s"\nseed = %d\nbase = 21.0\nnoise = 0.2\n' \
                "$i" "$INTERVAL" "$i"
        done
    fi
} >"$STATE_DIR/weir.toml"

"$WEIR_BIN" config check "$STATE_DIR/weir.toml" >/dev/null

mosquitto -c "$STATE_DIR/mosquitto.conf" >/dev/null 2>&1 &
mpid=$!
weir_pid=
lpid=
pubs=()
cleanup() {
    for p in "${pubs[@]}"; do kill -- "-$p" 2>/dev/null || true; done
    [ -n "$weir_pid" ] && kill "$weir_pid" 2>/dev/null && wait "$weir_pid" 2>/dev/null
    [ -n "$lpid" ] && kill "$lpid" 2>/dev/null && wait "$lpid" 2>/dev/null
    kill "$mpid" 2>/dev/null || true
    wait "$mpid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

if [ "$SOURCE" = mqtt ]; then
    mosquitto -c "$STATE_DIR/local.conf" >/dev/null 2>&1 &
    lpid=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$lport") 2>/dev/null && break
        sleep 0.1
    done
fi

WEIR_LOG=warn "$WEIR_BIN" run --config "$STATE_DIR/weir.toml" 2>"$STATE_DIR/weir.log" &
weir_pid=$!

if [ "$SOURCE" = mqtt ]; then
    # One publisher per sensor, a plain value every INTERVAL, QoS 1 (as most devices).
    for i in $(seq 1 "$SENSORS"); do
        topic=$(printf 'sensors/s%03d/temperature' "$i")
        # In its own process group (setsid), so that the cleanup ends the loop and
        # mosquitto_pub together, not only the shell that started them.
        setsid bash -c 'while sleep "$1"; do echo "21.$((RANDOM % 10))"; done |
            exec mosquitto_pub -h 127.0.0.1 -p "$2" -q 1 -l -t "$3"' _ "$INTERVAL" "$lport" "$topic" &
        pubs+=($!)
    done
fi
lio() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$lpid/io"; }

io() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$weir_pid/io"; }
status() {
    mosquitto_sub -p "$port" -h 127.0.0.1 -t weir/sdbench/status -C 1 -W 5 2>/dev/null || true
}
counter() { python3 -c 'import json,sys; d=json.loads(sys.argv[1] or "{}"); print(d.get("counters",{}).get(sys.argv[2],0))' "$1" "$2"; }

sleep "$WARMUP"
kill -0 "$weir_pid" || { echo "weir exited; log:" >&2; cat "$STATE_DIR/weir.log" >&2; exit 1; }
w0=$(io write_bytes)
s0=$(status)
t0=$(date +%s.%N)
if [ -n "$lpid" ]; then
    l0=$(lio write_bytes)
    strace -f -c -e trace=fsync,fdatasync -o "$STATE_DIR/strace-local.txt" -p "$lpid" 2>/dev/null &
    lstrace_pid=$!
fi
# fsync and fdatasync calls of every weir thread over the same SECONDS (strace's count).
strace -f -c -e trace=fsync,fdatasync -o "$STATE_DIR/strace.txt" -p "$weir_pid" 2>/dev/null &
strace_pid=$!
sleep "$SECONDS_RUN"
w1=$(io write_bytes)
s1=$(status)
kill -INT "$strace_pid" 2>/dev/null || true
wait "$strace_pid" 2>/dev/null || true
count_syncs() { awk '$NF == "fsync" || $NF == "fdatasync" {n += $4} END {print n + 0}' "$1"; }
syncs=$(count_syncs "$STATE_DIR/strace.txt")
if [ -n "$lpid" ]; then
    l1=$(lio write_bytes)
    kill -INT "$lstrace_pid" 2>/dev/null || true
    wait "$lstrace_pid" 2>/dev/null || true
    lsyncs=$(count_syncs "$STATE_DIR/strace-local.txt")
    kill "$lpid" 2>/dev/null && wait "$lpid" 2>/dev/null # SIGTERM: it saves once more
    lpid=
    lsize=$(du -cb "$STATE_DIR/local/" | tail -1 | cut -f1)
    python3 - "$l0" "$l1" "$lsyncs" "$SECONDS_RUN" "${AUTOSAVE:-1800}" "$lsize" <<'EOF'
import sys
l0, l1, n, secs, autosave, size = (int(x) for x in sys.argv[1:7])
d = (l1 - l0) / secs * 86400
print(f"local mosquitto (persistence true, autosave_interval {autosave}): {l1 - l0} bytes written, "
      f"{n} fsyncs in {secs} s ({d / 2**20:,.1f} MiB/day); its persistence file at the end "
      f"{size} bytes, written whole every {autosave} s: {size * 86400 / autosave / 2**20:,.2f} MiB/day")
EOF
fi
[ -n "${DEBUG:-}" ] && echo "status: $s1" >&2
t1=$(date +%s.%N)
db_bytes=$(du -cb "$STATE_DIR"/state/outbox.db* | tail -1 | cut -f1)

python3 - "$w0" "$w1" "$t0" "$t1" "$SENSORS" "$INTERVAL" "$WINDOW" "$FORMAT" \
    "$(counter "$s0" outbox_inserted)" "$(counter "$s1" outbox_inserted)" \
    "$(counter "$s0" acked)" "$(counter "$s1" acked)" "$db_bytes" "$syncs" \
    "$(counter "$s0" checkpoints)" "$(counter "$s1" checkpoints)" \
    "$(counter "$s0" outbox_written)" "$(counter "$s1" outbox_written)" <<'EOF'
import sys
w0, w1, t0, t1 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sensors, interval, window, fmt = sys.argv[5:9]
i0, i1, a0, a1, db, syncs, c0, c1, o0, o1 = (int(x) for x in sys.argv[9:19])
secs = t1 - t0
written = w1 - w0
rows = i1 - i0
per_day = written / secs * 86400
print(f"load: {sensors} sensors every {interval}, {window} tumbling windows, "
      f"format {fmt}, upstream up")
print(f"measured: {written} bytes written in {secs:.0f} s; {rows} rows produced, "
      f"{a1 - a0} acknowledged, {o1 - o0} written to the file (not delivered before a checkpoint)")
print(f"bytes/day: {per_day:,.0f} ({per_day / 2**20:,.1f} MiB/day, "
      f"{per_day * 365 / 2**30:,.1f} GiB/year)")
print(f"fsyncs: {syncs} in {secs:.0f} s (fsync + fdatasync, strace -f -c); "
      f"{syncs / secs * 86400:,.0f}/day; {c1 - c0} checkpoints committed")
if rows > 0:
    print(f"per outbox row: {written / rows:,.0f} bytes")
print(f"outbox files at the end: {db} bytes")
EOF
