#!/usr/bin/env bash
# Soak: weir under a steady disordered load for MINUTES (default 35), with the
# upstream broker restarted every RESTART_EVERY seconds (default 180, down
# RESTART_DOWN s each time). Passes when nothing was lost (every window with its
# exact count, every alert, every late reading) and the counters balance
# (received = windowed + late + rejected + dead-lettered); the JSON report and the
# one-line summary say what was measured. Outside CI: it takes MINUTES.
#
#   benches/soak.sh                     # 35 minutes, 1,000 readings/s, 1,000 keys
#   MINUTES=5 RATE=2000 benches/soak.sh # shorter
#   WEIR=target/debug/weir LOAD=target/debug/weir-load benches/soak.sh
#
# Extra arguments go to weir-load (e.g. --keys 500).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-35}
RATE=${RATE:-1000}
RESTART_EVERY=${RESTART_EVERY:-180}
RESTART_DOWN=${RESTART_DOWN:-5}
OUT=${OUT:-soak-$(date +%Y%m%d-%H%M%S).json}
if [[ -z "${WEIR:-}" || -z "${LOAD:-}" ]]; then
    cargo build --release -p weir -p weir-benches --bin weir --bin weir-load
fi
WEIR=${WEIR:-target/release/weir}
LOAD=${LOAD:-target/release/weir-load}
echo "soak: $MINUTES min at $RATE/s, upstream restarted every $RESTART_EVERY s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$LOAD" --weir "$WEIR" --label soak --rate "$RATE" --keys 1000 \
    --duration $((MINUTES * 60)) --window-ms 5000 --baseline 5 \
    --restart-upstream-every "$RESTART_EVERY" --restart-down "$RESTART_DOWN" \
    --drain-timeout 120 --out "$OUT" "$@"
