#!/bin/sh
# demo.sh — imaged's main job end to end on a fresh Debian bookworm machine (root): install
# packages, build imaged, then `imaged lab demo`: a virtual chassis (QEMU blades behind a Redfish
# BMC emulator, in network namespaces), a bootable image built and imported, every blade
# reimaged through the API and proven to run it, and each job's timeline. The chassis and its API
# stay up afterwards (`bin/imaged lab down` removes them). Extra flags go to `lab demo`
# (for example -blades 1).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/build.sh
exec bin/imaged lab demo "$@"
