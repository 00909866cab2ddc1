#!/usr/bin/env bash
# Demo of the main job: Weir with simulated sensors (and a device publishing over
# MQTT) against a private Mosquitto, printing what an upstream consumer receives.
# Installs mosquitto if missing. Nothing else is needed beyond the Rust toolchain.
#   DEMO_SECONDS=90 scripts/demo.sh      (default 75)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-75}
scripts/deps.sh demo

echo "== building weir"
cargo build --quiet -p weir
weir=target/debug/weir

work=$(mktemp -d /tmp/weir-demo.XXXXXX)
chmod 755 "$work"
port=""
for _ in $(seq 50); do
  p=$(shuf -i 20000-60000 -n 1)
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port" >&2; exit 1; }

cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
upgrade_outgoing_qos true
set_tcp_nodelay true
log_dest file $work/mosquitto.log
CONF
[ "$(id -u)" = 0 ] && touch "$work/mosquitto.log" && chown mosquitto "$work/mosquitto.log"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
/usr/sbin/mosquitto -c "$work/mosquitto.conf" & pids+=($!)
for _ in $(seq 50); do mosquitto_pub -p "$port" -t ping -n 2>/dev/null && break; sleep 0.1; done

cat > "$work/weir.toml" <<CONF
[agent]
device = "demo"
state_dir = "$work/state"
# Its own control socket: never the system one (/run/weir) of an installed weir.
runtime_dir = "$work/run"

[engine]
max_out_of_orderness = "1s"
allowed_lateness = "10s"
[engine.window]
size = "5s"

[uplink]
host = "127.0.0.1"
port = $port
status_interval = "10s"

[ingest]
host = "127.0.0.1"
port = $port
[[ingest.topic]]
filter = "sensors/+/+"
sensor = "{2}"
metric = "{3}"

# A greenhouse thermometer: a spike after 15 s.
[[sim]]
name = "greenhouse"
metric = "temperature"
interval = "500ms"
seed = 42
base = 21.0
noise = 0.15
[[sim.anomaly]]
kind = "spike"
at = 30
length = 4
magnitude = 15.0

# A pump's vibration: a lasting shift from 40 s to 55 s.
[[sim]]
name = "pump"
metric = "vibration"
interval = "250ms"
seed = 7
base = 2.0
noise = 0.05
[[sim.anomaly]]
kind = "step"
at = 160
length = 60
magnitude = 1.5

[[detector]]
name = "too-hot"
kind = "threshold"
metric = "temperature"
high = 30.0
hysteresis = 1.0
clear_after = "2s"
severity = "critical"

[[detector]]
name = "unusual"
kind = "auto"
CONF

"$weir" config check "$work/weir.toml"
"$weir" run --config "$work/weir.toml" 2>"$work/weir.log" & weir_pid=$!; pids+=($weir_pid)

# A device on the local broker: readings with its own timestamps, and one broken payload.
(
  sleep 3
  for i in $(seq 1 $((seconds - 5))); do
    mosquitto_pub -p "$port" -q 1 -t sensors/kitchen/humidity -m "{\"value\": $((50 + i % 7)), \"ts\": $(date +%s%3N)}"
    [ "$i" = 8 ] && mosquitto_pub -p "$port" -q 1 -t sensors/kitchen/humidity -m "fifty-five"
    sleep 1
  done
) & pids+=($!)

echo "== weir is running (log: $work/weir.log); upstream messages for ${seconds}s:"
field() { sed -nE "s/.*\"$1\":(\"([^\"]*)\"|([^,}]*)).*/\2\3/p" <<<"$2"; }
hms() { date -u -d "@$(( $1 / 1000 ))" +%H:%M:%S; }
num() { printf '%.2f' "$1"; }
timeout "$seconds" mosquitto_sub -p "$port" -q 1 -v -t 'weir/demo/#' | while read -r topic payload; do
  t=${topic#weir/demo/}
  case "$t" in
    agg/*) printf '%-30s window %s-%s  n=%-3s mean=%-7s min=%-7s max=%-7s rev %s %s\n' "$t" \
             "$(hms "$(field window_start "$payload")")" "$(hms "$(field window_end "$payload")")" \
             "$(field count "$payload")" "$(num "$(field mean "$payload")")" "$(num "$(field min "$payload")")" \
             "$(num "$(field max "$payload")")" "$(field revision "$payload")" "$(field timing "$payload")" ;;
    alert/*) printf '%-30s ALERT %-7s %-8s %-8s %s\n' "$t" "$(field state "$payload" | tr a-z A-Z)" \
             "$(field severity "$payload")" "$(field detector "$payload")" "$(field reason "$payload")" ;;
    deadletter) printf '%-30s %s: payload %s from %s\n' "$t" "$(field reason "$payload")" "$(field payload "$payload")" "$(field source "$payload")" ;;
    late) printf '%-30s %s\n' "$t" "$payload" ;;
    status) printf '%-30s %s, readings=%s acked=%s\n' "$t" "$(field state "$payload")" \
             "$(field readings "$payload")" "$(field acked "$payload")" ;;
  esac
done || true

echo "== stopping weir (SIGTERM): it delivers its backlog, then exits"
kill -TERM "$weir_pid"; wait "$weir_pid" || true
grep -E 'stopped|alert' "$work/weir.log" | tail -n 8 | cut -c1-240
echo "== files kept in $work"
