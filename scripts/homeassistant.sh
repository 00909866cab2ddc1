#!/usr/bin/env bash
# Installs, idempotently, the Home Assistant core that tests/tests/homeassistant.rs runs
# against: a venv (/opt/weir-ha as root, else ~/.cache/weir-ha; or $WEIR_HA_VENV) holding homeassistant 2024.3.3,
# the last release that runs on Python 3.11 (2024.4 needs 3.12), and the requirements of
# the integrations a minimal configuration sets up, so that the test can start it with
# `hass --skip-pip` and nothing is fetched at test time:
#   mqtt (paho-mqtt), http, file_upload, and the integrations Home Assistant always loads
#   (frontend, backup, network, hardware, person/image_upload, recorder's modules).
# Versions come from the release's own package_constraints.txt, without which pip
# backtracks for many minutes through unpinned Bluetooth packages. josepy < 2: the
# cloud integration's acme fails to import with josepy 2.
# Usage: scripts/homeassistant.sh        (does nothing when already installed)
set -euo pipefail
HA_VERSION=2024.3.3
if [ "$(id -u)" = 0 ]; then default=/opt/weir-ha; else default=${XDG_CACHE_HOME:-$HOME/.cache}/weir-ha; fi
venv=${WEIR_HA_VENV:-$default}
marker="$venv/.weir-homeassistant-$HA_VERSION"
[ -f "$marker" ] && exit 0

py=${WEIR_HA_PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
  echo "homeassistant: $py is $("$py" -V 2>&1); Home Assistant $HA_VERSION needs 3.11 or 3.12" >&2
  exit 1
fi
if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "homeassistant: $py has no venv module; install python3-venv" >&2
  exit 1
fi
echo "homeassistant: installing Home Assistant $HA_VERSION into $venv (a few minutes)" >&2
start=$(date +%s)
rm -rf "$venv"
"$py" -m venv "$venv"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download -q --no-deps "homeassistant==$HA_VERSION" -d "$tmp"
"$venv/bin/python" - "$tmp" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
whl = zipfile.ZipFile(glob.glob(f"{d}/homeassistant-*.whl")[0])
open(f"{d}/constraints.txt", "wb").write(whl.read("homeassistant/package_constraints.txt"))
PY
"$venv/bin/pip" install -q -c "$tmp/constraints.txt" "$tmp"/homeassistant-*.whl \
  'paho-mqtt==1.6.1' \
  'aiohttp_cors==0.7.0' 'aiohttp-fast-url-dispatcher==0.3.0' 'aiohttp-zlib-ng==0.3.1' \
  'janus==1.0.0' 'home-assistant-frontend==20240307.0' 'securetar==2024.2.1' \
  'ifaddr==0.2.0' 'psutil-home-assistant==0.0.1' 'Pillow==10.2.0' \
  'SQLAlchemy==2.0.27' 'fnv-hash-fast==0.5.0' 'josepy<2'
"$venv/bin/hass" --version >/dev/null
touch "$marker"
echo "homeassistant: installed in $(( $(date +%s) - start ))s" >&2
