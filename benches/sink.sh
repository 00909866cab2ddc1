#!/usr/bin/env bash
# Rows per second that weir-sink writes into PostgreSQL: one sink process, then two sharing
# one subscription ($share/<group>/...). Everything is private and on loopback: a PostgreSQL
# cluster made with initdb (Debian's postgresql package: scripts/deps.sh test), a Mosquitto,
# the release weir-sink.
#
# Each run first creates the sinks' persistent sessions (the sinks start, subscribe, stop),
# then queues N distinct panes for them on the broker (mosquitto_pub), then starts the sinks
# and times until PostgreSQL holds N rows: the sinks' own speed at draining a backlog, each
# message committed before its PUBACK, not the publisher's.
#
# Usage: benches/sink.sh            N=20000 panes, --batch 500, release build
#        N=50000 BATCH=200 benches/sink.sh
#        PROFILE=debug benches/sink.sh   (the debug build: quicker to build, slower to run)
#        SINK_BIN=path/to/weir-sink benches/sink.sh   (no build)
#        WEIR_SINK_NO_GUARD=1 benches/sink.sh   (sinks without their guard sessions)
#
# With the guard (the default, docs/fleet.md) each sink's guard session also holds all N
# panes and writes them until its mark comes back, which at a sink's start covers the whole
# backlog: the figure is then the time until every row is in, whoever wrote it.
set -euo pipefail
N=${N:-20000}
BATCH=${BATCH:-500}
PROFILE=${PROFILE:-release}
root=$(cd "$(dirname "$0")/.." && pwd)

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || { echo "PostgreSQL is not installed: scripts/deps.sh test" >&2; exit 1; }
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "mosquitto is not installed: scripts/deps.sh" >&2; exit 1; }

sink=${SINK_BIN:-"$root/target/$PROFILE/weir-sink"}
if [ -z "${SINK_BIN:-}" ]; then
  echo "building weir-sink ($PROFILE)..." >&2
  if [ "$PROFILE" = release ]; then
    cargo build --release --quiet -p weir-sink --manifest-path "$root/Cargo.toml"
  else
    cargo build --quiet -p weir-sink --manifest-path "$root/Cargo.toml"
  fi
fi

tmp=$(mktemp -d /tmp/weir-sink-bench.XXXXXX)
chmod 755 "$tmp"
pids=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  (cd / && as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1) || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$tmp/pg" "$tmp/mq"
if [ "$(id -u)" = 0 ]; then chown postgres "$tmp/pg"; chown mosquitto "$tmp/mq"; fi
pgport=$(free_port)
(cd / && as_pg "$pgbin/initdb" -D "$tmp/pg/data" -U weir -A trust -E UTF8 --locale=C >/dev/null)
(cd / && as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" \
  -o "-p $pgport -c listen_addresses=127.0.0.1 -k $tmp/pg" -w start >/dev/null)
db="host=127.0.0.1 port=$pgport user=weir dbname=postgres"
psql() { "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$db" -c "$1"; }

mqport=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$mqport" > "$tmp/mq/mosquitto.conf"
mosquitto -c "$tmp/mq/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/"$mqport") 2>/dev/null && break; sleep 0.1; done

# N panes with distinct ids (8 devices, 4 sensors), one JSON line each.
panes() {
  python3 - "$1" "$N" <<'EOF'
import json, sys
run, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    dev, sensor, w = f"{run}-{i % 8}", f"s{(i // 8) % 4}", i // 32
    start, end = 1_700_000_000_000 + w * 1000, 1_700_000_000_000 + w * 1000 + 1000
    pid = f"{dev}/{sensor}/temp/{start}-{end}"
    print(json.dumps({"v": 1, "type": "pane", "id": pid, "msg_id": pid + "#r0", "device": dev,
        "sensor": sensor, "metric": "temp", "window_start": start, "window_end": end,
        "revision": 0, "timing": "on_time", "final": False, "count": 10, "sum": 215.0,
        "min": 21.0, "max": 22.0, "mean": 21.5, "stddev": 0.3, "first": 21.0, "last": 22.0,
        "emitted_at": end + 5}))
EOF
}

start_sink() { # client id, group, log
  # Each run on its own topics: the previous runs' sessions (and guards) stay on the broker.
  "$sink" --mqtt "127.0.0.1:$mqport" --database "$db" --client-id "$1" --group "$2" \
    --topic "weir/$2/#" --batch "$BATCH" >/dev/null 2>"$3" &   # stdout closed: $(start_sink) returns at once
  pids+=($!)
  echo $!
}

wait_log() { for _ in $(seq 300); do grep -q "$2" "$1" && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1; }

run() { # number of sinks
  local n=$1 group="bench-$1" ps=() i
  for i in $(seq "$n"); do ps+=("$(start_sink "$group-$i" "$group" "$tmp/$group-$i.warm")"); done
  # Both subscriptions in place: the shared one, and the guard's (its mark came back).
  local ready=subscribed
  [ "$GUARD" = on ] && ready="its mark came back"
  for i in $(seq "$n"); do wait_log "$tmp/$group-$i.warm" "$ready"; done
  kill "${ps[@]}"; wait "${ps[@]}" 2>/dev/null || true
  psql "TRUNCATE panes"
  panes "$group" > "$tmp/$group.jsonl"
  # At most 60,000 lines a process: past its 65,535 message ids mosquitto_pub -l may quit early.
  split -l 60000 --filter="mosquitto_pub -p $mqport -q 1 -t weir/$group/agg/s/temp -l" < "$tmp/$group.jsonl"
  ps=()
  local t0 t1
  t0=$(date +%s.%N)
  for i in $(seq "$n"); do ps+=("$(start_sink "$group-$i" "$group" "$tmp/$group-$i.log")"); done
  until [ "$(psql 'SELECT count(*) FROM panes')" -ge "$N" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  kill "${ps[@]}"; wait "${ps[@]}" 2>/dev/null || true
  python3 -c "n=$N; t=$t1-$t0; print(f'$n sink(s): {n} rows in {t:.2f} s = {n/t:,.0f} rows/s (batch $BATCH, $PROFILE build, guard ${GUARD})')"
}

GUARD=$([ -n "${WEIR_SINK_NO_GUARD:-}" ] && echo off || echo on)
echo "weir-sink bench: $N panes, $(nproc) cores, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') mosquitto" >&2
run 1
run 2
