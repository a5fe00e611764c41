#!/bin/sh
# bench/dhcp/run.sh — imaged's DHCP server (internal/dhcp, server mode, leases persisted in bbolt
# through internal/store) against dnsmasq (lease file on disk) and kea-dhcp4 (memfile,
# persist: true), driven by perfdhcp in relay mode over a veth pair between two private network
# namespaces (never the host's interfaces):
#
#   srv netns: veth-s 10.98.0.1/16   <==>   cli netns: veth-c 10.98.0.2/16 (perfdhcp, giaddr)
#
# Relay mode needs the server's subnet to contain giaddr, hence the /16 (lab pitfall P10); every
# server is restarted with an empty lease database for every data point (dnsmasq degrades as
# leases pile up). "leases/s" is completed REQUEST→ACK exchanges per second; "avg delay" is
# perfdhcp's average REQUEST→ACK delay. perfdhcp and the server share the 2 cores.
#
# Needs root, iproute2, perfdhcp (kea-admin), kea-dhcp4, dnsmasq, python3 and Go.
# Knobs: RATES="4000 8000 12000", PERIOD=10 (seconds per run), SERVERS="imaged kea dnsmasq",
# WORKERS is unused (kept for old invocations). imaged runs as the product does: `imaged serve` with
# a generated config (server mode, unknown_clients: lease, leases in its bbolt state file), and its
# packet counters are read from its /metrics. Everything it starts is stopped by PID and the
# namespaces are deleted on exit.
set -eu
RATES=${RATES:-4000 8000 12000}
PERIOD=${PERIOD:-10}
SERVERS=${SERVERS:-imaged kea dnsmasq}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for c in ip perfdhcp kea-dhcp4 dnsmasq go curl; do
	command -v "$c" >/dev/null || { echo "run.sh: $c not found" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/dhcp-bench.XXXXXX")
NS_S=imbd-s$$
NS_C=imbd-c$$
PID=""
stop() { # stop the running server by PID
	[ -n "$PID" ] || return 0
	kill "$PID" 2>/dev/null || true
	i=0
	while kill -0 "$PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	kill -9 "$PID" 2>/dev/null || true
	PID=""
}
cleanup() {
	stop
	ip netns del "$NS_S" 2>/dev/null || true
	ip netns del "$NS_C" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$REPO" && CGO_ENABLED=0 go build -o "$W/imaged" ./cmd/imaged)

ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add veth-s netns "$NS_S" type veth peer name veth-c netns "$NS_C"
ip -n "$NS_S" addr add 10.98.0.1/16 dev veth-s
ip -n "$NS_C" addr add 10.98.0.2/16 dev veth-c
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set veth-s up
ip -n "$NS_C" link set veth-c up
sleep 1

# Server configurations: the same /16, pool and 1 h lease time for all three.
cat >"$W/dnsmasq.conf" <<CONF
port=0
interface=veth-s
except-interface=lo
bind-interfaces
dhcp-range=10.98.1.0,10.98.255.254,255.255.0.0,1h
dhcp-authoritative
no-ping
dhcp-lease-max=100000
dhcp-leasefile=$W/dnsmasq.leases
pid-file=$W/dnsmasq.pid
log-facility=$W/dnsmasq.log
CONF
cat >"$W/kea.json" <<CONF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["veth-s"], "dhcp-socket-type": "udp"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$W/kea-leases4.csv", "lfc-interval": 0},
  "valid-lifetime": 3600, "authoritative": true,
  "subnet4": [{"id": 1, "subnet": "10.98.0.0/16", "pools": [{"pool": "10.98.1.0 - 10.98.255.254"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "$W/kea.log"}], "severity": "WARN"}]
}}
CONF
cat >"$W/imaged.yaml" <<CONF
version: 1
state_dir: $W/state
log: {level: warn}
http: {listen: 10.98.0.1:8080}
dhcp:
  mode: server
  interface: veth-s
  server_ip: 10.98.0.1
  subnet: 10.98.0.0/16
  pool: {start: 10.98.1.0, end: 10.98.255.254}
  lease_time: 1h
  unknown_clients: lease
  router_advertisements: {enabled: false}
tftp: {enabled: false}
boot: {assets_dir: $W/boot}
CONF
export KEA_PIDFILE_DIR="$W" KEA_LOCKFILE_DIR="$W" # kea otherwise wants /run/kea (lab pitfall P9)

start() { # SERVER RATE: start SERVER with an empty lease database
	rm -rf "$W"/dnsmasq.leases "$W"/kea-leases4.csv* "$W"/state
	case $1 in
	imaged)
		ip netns exec "$NS_S" "$W/imaged" serve -config "$W/imaged.yaml" 2>"$W/imaged-$2.log" &
		PID=$!
		;;
	kea)
		ip netns exec "$NS_S" kea-dhcp4 -c "$W/kea.json" >>"$W/kea.out" 2>&1 &
		PID=$!
		;;
	dnsmasq)
		ip netns exec "$NS_S" dnsmasq --conf-file="$W/dnsmasq.conf" --keep-in-foreground &
		PID=$!
		;;
	esac
	sleep 1.5
	kill -0 "$PID" 2>/dev/null || { echo "run.sh: $1 did not start" >&2; cat "$W"/*.log "$W"/*.out 2>/dev/null >&2; exit 1; }
}

perf() { # SERVER RATE -> one table row
	ip netns exec "$NS_C" timeout $((PERIOD + 20)) perfdhcp -4 -r "$2" -R 60000 -p "$PERIOD" -l 10.98.0.2 10.98.0.1 2>&1 |
		awk -v S="$1" -v R="$2" -v P="$PERIOD" '
		/Statistics for: DISCOVER-OFFER/ {s="DO"} /Statistics for: REQUEST-ACK/ {s="RA"}
		/^sent packets/ {sent[s]=$3} /^received packets/ {recv[s]=$3} /^avg delay/ {avg[s]=$3}
		END { printf "%-26s %8s %10.0f %14s   %s/%s offers, %s/%s acks\n", S, R, recv["RA"]/P, avg["RA"], recv["DO"], sent["DO"], recv["RA"], sent["RA"] }'
}

label() {
	case $1 in
	imaged) echo "imaged (bbolt, batched)" ;;
	kea) echo "kea-dhcp4 (memfile, persist)" ;;
	dnsmasq) echo "dnsmasq (lease file)" ;;
	esac
}

T0=$(date +%s)
printf '%-26s %8s %10s %14s   %s\n' server "offered/s" "leases/s" "avg delay ms" "detail"
for r in $RATES; do # servers alternate at each rate, so that the shared machine's drift hits all alike
	for s in $SERVERS; do
		start "$s" "$r"
		perf "$(label "$s")" "$r"
		if [ "$s" = imaged ]; then # its packet counters, type/disposition=count
			ip netns exec "$NS_S" curl -s http://10.98.0.1:8080/metrics |
				awk -F'[{}]' '/^imaged_dhcp_packets_total/ { split($2, l, /[=",]+/); v=$3+0; if (v > 0) printf "%s/%s=%d ", l[4], l[2], v }' >"$W/imaged-$r.counts"
		fi
		stop
	done
done
echo "(perfdhcp -4 -r RATE -R 60000 -p $PERIOD -l 10.98.0.2 10.98.0.1, relay mode; server restarted empty per row; $(($(date +%s) - T0)) s)"
for r in $RATES; do # imaged's own packet counters (type/disposition) and any warnings, per run
	[ -f "$W/imaged-$r.counts" ] || continue
	printf 'imaged @%s/s packets: %s\n' "$r" "$(cat "$W/imaged-$r.counts")"
	head -5 "$W/imaged-$r.log"
done
