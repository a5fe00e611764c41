#!/bin/sh
# demo.sh — the whole netboot story on a fresh Debian bookworm machine (root): install packages,
# build imaged, then `imaged lab demo`: network namespaces, imaged serving DHCP/TFTP/HTTP, a QEMU
# blade that PXE boots imaged's agent, and the blade's timeline. Extra flags go to `lab demo`
# (for example -firmware uefi, or -keep to leave the lab up).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/build.sh
exec bin/imaged lab demo "$@"
