#!/usr/bin/env bash
# Prints the /etc/weir/weir.toml the package installs, from `weir config example`:
# the device is named after the host (its line commented out), and every local
# sensor section ([[sim]], [[i2c]], [[gpio]], [[onewire]] and their sub-tables) is
# commented out, so a fresh Pi publishes nothing simulated under its real name and
# raises no alert for a chip it does not have. The ingest topics stay: a device
# publishing to the local broker is the common first source.
# Usage: packaging/weir-toml.sh path/to/weir   (packaging/deb.sh and the tests run it)
set -euo pipefail
weir=${1:?usage: weir-toml.sh path/to/weir}
echo "# Installed by the weir package as /etc/weir/weir.toml (a conffile: your"
echo "# changes are kept on upgrade). Check before applying: weir config check,"
echo "# then: systemctl reload weir. Every key: weir config example; man weir."
echo "# The local sensor sections below are commented out: uncomment and adapt the"
echo "# ones wired to this device (weir sensors scan finds I2C chips)."
echo "#"
"$weir" config example | awk '
  /^device = / { print "# " $0; next }
  /^\[/ { local = ($0 ~ /^\[\[(sim|i2c|gpio|onewire)(\.[a-z_]+)?\]\]/) }
  local && !/^#/ && NF { print "# " $0; next }
  { print }'
