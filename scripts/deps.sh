#!/usr/bin/env bash
# Installs, idempotently, the Debian packages Weir's demo and tests need:
#   mosquitto, mosquitto-clients   a real broker for the demo and end-to-end tests
#   python3-prometheus-client      the reference exposition-format parser the metrics
#                                  test checks `weir metrics` with
#   postgresql                     initdb/pg_ctl/psql for the weir-sink test's private
#                                  cluster (tests/tests/sink.rs; no service is started)
#   lintian                        Debian's policy checker for the packages
#   rustc-web 1.85 (held)          Debian's rustc, our ARM toolchain's version: the
#                                  test run checks the workspace still builds with it
#   python3-venv, then Home Assistant in a venv (scripts/homeassistant.sh), for the
#                                  discovery test (tests/tests/homeassistant.rs)
# Usage: scripts/deps.sh [demo|test]   (demo needs only the broker)
set -euo pipefail
want=${1:-test}

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps: not root and no sudo; install: mosquitto mosquitto-clients" >&2; exit 1; }
  SUDO=sudo
fi

missing=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
if [ "$want" = test ]; then
  [ -f /usr/lib/python3/dist-packages/prometheus_client/parser.py ] || missing+=(python3-prometheus-client)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  # Debian's package checker: packaging/check-deb.sh runs it on every .deb.
  command -v lintian >/dev/null || missing+=(lintian)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  # bookworm-security carries a newer rustc-web for amd64 only; 1.85 is the one whose
  # ARM standard library Debian ships, so pin exactly that.
  v185=$(apt-cache madison rustc-web 2>/dev/null | awk '$3 ~ /^1\.85\./ {print $3; exit}')
  if ! /usr/bin/rustc --version 2>/dev/null | grep -q '^rustc 1\.85\.'; then
    missing+=(rustc-web)
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  pkgs=()
  for p in "${missing[@]}"; do
    if [ "$p" = rustc-web ]; then
      v185=$(apt-cache madison rustc-web | awk '$3 ~ /^1\.85\./ {print $3; exit}')
      [ -n "$v185" ] || { echo "deps: no rustc-web 1.85 in the apt sources" >&2; exit 1; }
      pkgs+=("rustc-web=$v185" "libstd-rust-web-dev=$v185" "libstd-rust-web-1.85=$v185")
    else
      pkgs+=("$p")
    fi
  done
  $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null
  if printf '%s\n' "${missing[@]}" | grep -qx rustc-web; then
    $SUDO apt-mark hold rustc-web libstd-rust-web-dev libstd-rust-web-1.85 >/dev/null
  fi
fi
if [ "$want" = test ]; then
  "$(dirname "$0")/homeassistant.sh"
fi
# Debian starts the packaged broker on 1883; the demo and tests use private brokers
# on free ports and do not need it (and CI machines have no systemd anyway).
exit 0
