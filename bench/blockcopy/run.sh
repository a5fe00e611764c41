#!/bin/sh
# bench/blockcopy/run.sh — internal/blockcopy against bmaptool copy, curl | tee >(sha256sum),
# sha256sum, dd and nginx, on a 2 GiB image with half its blocks zero, served by `imaged serve`
# over 127.0.0.1 only, in plain HTTP and over HTTPS (blockcopy with the agent's pinned client;
# nginx with ssl beside it), writing to files under /var/tmp (and a loop device). One run, one
# table (see main.go/bench.go).
#
#   sh bench/blockcopy/run.sh
#
# Needs root (loop device, nginx), bmaptool (bmap-tools), nginx, curl, openssl and Go.
# Knobs: RUNS=3 (part 1, median), CLIENTS=8, SIZE=2147483648, LOOP=1, TMPDIR=/var/tmp.
# Needs about (CLIENTS + 3) × SIZE free (the image, two imaged blob stores, the outputs).
# Everything it starts is stopped by PID and every file it made is deleted on exit.
set -eu
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-8}
SIZE=${SIZE:-2147483648}
LOOP=${LOOP:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (loop device, nginx)" >&2; exit 1; }
for c in bmaptool nginx curl openssl sha256sum dd losetup bash go; do
	command -v "$c" >/dev/null || { echo "run.sh: $c not found" >&2; exit 1; }
done
BASE=${TMPDIR:-/var/tmp}
need=$(( (CLIENTS + 3) * SIZE / 1024 ))
avail=$(df -Pk "$BASE" | awk 'NR==2 {print $4}')
[ "$avail" -gt "$need" ] || { echo "run.sh: $BASE has $avail KiB free, the bench needs $need" >&2; exit 1; }

W=$(mktemp -d "$BASE/blockcopy-bench.XXXXXX")
chmod 755 "$W" # nginx's workers run as nobody
BPID=""
cleanup() {
	[ -n "$BPID" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null || true
	[ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
	for d in $(losetup -j "$W/loop-backing" 2>/dev/null | cut -d: -f1); do losetup -d "$d" || true; done
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$REPO" && CGO_ENABLED=0 go build -o "$W/blockcopy-bench" ./bench/blockcopy && CGO_ENABLED=0 go build -o "$W/imaged" ./cmd/imaged)
loop=true
[ "$LOOP" = 1 ] || loop=false
"$W/blockcopy-bench" bench -imaged "$W/imaged" -dir "$W" -size "$SIZE" -runs "$RUNS" -clients "$CLIENTS" -loop=$loop &
BPID=$!
wait "$BPID"
BPID=""
