#!/bin/sh
# install-deps.sh — install what imaged's demo, tests and benchmarks use on Debian bookworm (root).
# Nothing here starts a service in the host's namespace: Debian would start dnsmasq, tftpd-hpa,
# nginx, kea and prometheus on install, so a policy-rc.d that refuses is in place for the duration.
set -eu
if [ "$(id -u)" != 0 ]; then echo "install-deps.sh: run as root (apt-get install)" >&2; exit 1; fi
need=""
for p in qemu-system-x86 ipxe-qemu ipxe ovmf dnsmasq busybox udhcpc isc-dhcp-client tftp-hpa atftp \
         tftpd-hpa curl iproute2 kea-admin kea-dhcp4-server nginx-light tcpdump python3 zstd systemd fdisk e2fsprogs qemu-utils bmap-tools \
         redfishtool python3-sushy syslinux syslinux-common mtools dosfstools prometheus; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
  added=0
  if [ ! -x /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; added=1; fi
  apt-get update -q
  # ipxe: undionly.kpxe, ipxe.efi, snponly.efi (served over TFTP); ipxe-qemu: the NICs' option ROMs;
  # prometheus: /usr/bin/promtool, which checks and unit-tests systemd/imaged.rules.yml (the server
  # itself is never run; without recommends, no node exporter either)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
  [ "$added" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
for n in dnsmasq in.tftpd kea-dhcp4 nginx prometheus; do
  if pgrep -x "$n" >/dev/null; then echo "install-deps.sh: stopping $n, which runs in the host namespace" >&2; pkill -x "$n" || true; fi
done
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
command -v go >/dev/null 2>&1 || { echo "install-deps.sh: Go >= 1.26 is required (not in bookworm's archive; install it at /usr/local/go)" >&2; exit 1; }
