#!/bin/sh
# bench/reimage/run.sh — the lab reimage broken down per phase, with 1 blade and with 2 at once:
# API call to ready, and which phases dominate (QEMU under TCG on this machine). Root.
#
#   sh bench/reimage/run.sh          (RUNS=3 by default)
#
# Everything runs in the lab's own network namespaces; each run's chassis is taken down after it.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces, QEMU)" >&2; exit 1; }
W=$(mktemp -d /var/tmp/reimage-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
# imaged, and beside it the agent and the lab OS's init, where the lab looks for them.
(cd "$REPO" && CGO_ENABLED=0 go build -o "$W/" ./cmd/imaged ./cmd/imaged-agent ./internal/lab/cmd/imaged-labos-init && CGO_ENABLED=0 go build -o "$W/reimage-bench" ./bench/reimage)
"$W/reimage-bench" -imaged "$W/imaged" -dir "$W/chassis" -runs "${RUNS:-3}"
