#!/bin/sh
# bench/tftp/run.sh — imaged's TFTP server (internal/tftp) against tftpd-hpa, 30 MiB of random
# data over a veth pair between two private network namespaces (never the host's interfaces).
#
#   srv netns: veth 10.98.0.1/24 (imaged) and 10.98.0.3/24 (tftpd-hpa)  <==>  cli netns: 10.98.0.2/24
#
# Both servers run side by side for the whole bench and the fetches alternate between them run by
# run, so that the 2-core machine's drift (CPU placement, noisy neighbours) hits both alike.
# Clients: atftp at blksize 512 and 1468 (and 1468 + windowsize 16, RFC 7440, which tftpd-hpa
# ignores), and the tftp-hpa client (512, no options). Prints one table of median MiB/s.
#
# Needs root, iproute2, atftp, tftp-hpa, tftpd-hpa and Go. Knobs: RUNS=3, SIZE_MIB=30,
# imaged runs as the product does: `imaged serve` with a generated config (DHCP off).
# Everything it starts is stopped by PID and the namespaces are deleted on exit.
set -eu
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for c in ip atftp tftp in.tftpd go python3; do
	command -v "$c" >/dev/null || { echo "run.sh: $c not found" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/tftp-bench.XXXXXX")
NS_S=imbt-s$$
NS_C=imbt-c$$
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	for p in $PIDS; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$p" 2>/dev/null || true
	done
	ip netns del "$NS_S" 2>/dev/null || true
	ip netns del "$NS_C" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$REPO" && CGO_ENABLED=0 go build -o "$W/imaged" ./cmd/imaged)
mkdir -p "$W/root"
head -c "${SIZE_MIB}M" /dev/urandom >"$W/root/f.bin"
chmod -R a+rX "$W"

ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add veth-s netns "$NS_S" type veth peer name veth-c netns "$NS_C"
ip -n "$NS_S" addr add 10.98.0.1/24 dev veth-s
ip -n "$NS_S" addr add 10.98.0.3/24 dev veth-s
ip -n "$NS_C" addr add 10.98.0.2/24 dev veth-c
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set veth-s up
ip -n "$NS_C" link set veth-c up

# imaged as the product runs: `imaged serve`, DHCP off, TFTP over its boot-assets directory.
cat >"$W/imaged.yaml" <<CONF
version: 1
state_dir: $W/state
log: {level: warn}
http: {listen: 10.98.0.1:8080, public_url: http://10.98.0.1:8080}
tftp: {listen: 10.98.0.1:69}
boot: {assets_dir: $W/root}
CONF
ip netns exec "$NS_S" "$W/imaged" serve -config "$W/imaged.yaml" 2>"$W/imaged.log" &
IM_PID=$!
PIDS="$PIDS $IM_PID"
# The flags of shared/lab/lab-bench.sh: -L foreground, -s chroot to DIR, -B the largest blksize.
# (ip netns exec execs, so $! is the server itself, which forks one child per transfer.)
ip netns exec "$NS_S" in.tftpd -L -s -a 10.98.0.3:69 -B 65464 -u nobody "$W/root" &
HP_PID=$!
PIDS="$PIDS $HP_PID"
sleep 0.5

# Server CPU time: `perf stat -p` counts task-clock of the server and of the children it forks
# while attached (tftpd-hpa serves each transfer in a child, and ignores SIGCHLD, so the children's
# time never reaches its cutime). Without perf the column says "-".
HAVE_PERF=0
command -v perf >/dev/null && perf stat -e task-clock -p $$ -- true >/dev/null 2>&1 && HAVE_PERF=1

# fetch PID SERVER_IP CLIENT... -> prints "MiB/s CPU-ms" (MiB/s is FAIL on a bad copy)
fetch() {
	pid=$1 ip=$2
	shift 2
	rm -f "$W/got" "$W/perf.csv"
	if [ $HAVE_PERF = 1 ]; then
		perf stat -x, -e task-clock -o "$W/perf.csv" -p "$pid" &
		perf=$!
		sleep 0.1
	fi
	t0=$(date +%s.%N)
	case $1 in
	tftp-hpa) ip netns exec "$NS_C" timeout 60 tftp -m binary "$ip" -c get f.bin "$W/got" >/dev/null 2>&1 || true ;;
	atftp)
		bs=$2
		ws=${3:-}
		set -- --option "blksize $bs"
		[ -n "$ws" ] && set -- "$@" --option "windowsize $ws"
		ip netns exec "$NS_C" timeout 60 atftp "$@" -g -r f.bin -l "$W/got" "$ip" >/dev/null 2>&1 || true
		;;
	esac
	t1=$(date +%s.%N)
	ms=-
	if [ $HAVE_PERF = 1 ]; then
		sleep 0.1 # the tftpd-hpa child exits after the last ACK
		kill -INT $perf 2>/dev/null || true
		wait $perf || true
		ms=$(awk -F, '/task-clock/ {printf "%.0f", $1}' "$W/perf.csv")
	fi
	if cmp -s "$W/got" "$W/root/f.bin"; then
		python3 -c "print('%.1f $ms' % ($SIZE_MIB / ($t1 - $t0)))"
	else
		echo "FAIL $ms"
	fi
}

median() { # values... -> median (FAIL if any failed)
	case " $* " in *" FAIL "*) echo FAIL; return ;; esac
	printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

perMiB() { # CPU-ms per run... -> median CPU ms per MiB
	case " $* " in *" - "*) echo -; return ;; esac
	python3 -c "print('%.1f' % ($(median "$@") / $SIZE_MIB))"
}
row() { printf '%-10s %-9s %-8s %-5s %10s %11s  %s\n' "$@"; }

# The machine may be shared: wall-clock throughput is noisy, server CPU time per MiB much less so.
T0=$(date +%s)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
row server client blksize wsize "MiB/s(med)" "CPU ms/MiB" "runs (MiB/s)"
for case in "atftp 512" "atftp 1468" "tftp-hpa 512" "atftp 1468 16"; do
	set -- $case
	client=$1 bs=$2 ws=${3:-1}
	im="" hp="" imcpu="" hpcpu=""
	i=0
	while [ $i -lt "$RUNS" ]; do
		for srv in imaged tftpd-hpa; do
			if [ $srv = imaged ]; then set -- "$IM_PID" 10.98.0.1; else set -- "$HP_PID" 10.98.0.3; fi
			if [ "$client" = tftp-hpa ]; then
				set -- $(fetch "$@" tftp-hpa)
			elif [ "$ws" = 1 ]; then
				set -- $(fetch "$@" atftp "$bs")
			else
				set -- $(fetch "$@" atftp "$bs" "$ws")
			fi
			if [ $srv = imaged ]; then im="$im $1" imcpu="$imcpu $2"; else hp="$hp $1" hpcpu="$hpcpu $2"; fi
		done
		i=$((i + 1))
	done
	# shellcheck disable=SC2086
	row imaged "$client" "$bs" "$ws" "$(median $im)" "$(perMiB $imcpu)" "$im"
	# shellcheck disable=SC2086
	row tftpd-hpa "$client" "$bs" "$ws" "$(median $hp)" "$(perMiB $hpcpu)" "$hp"
done
echo "($SIZE_MIB MiB file, $RUNS runs each, alternating servers; $(($(date +%s) - T0)) s)"
if grep -q . "$W/imaged.log"; then echo "imaged server log:"; cat "$W/imaged.log"; fi
