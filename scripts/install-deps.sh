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

# Debian trixie's iPXE, for the lab's HTTPS netboot test (internal/lab/https_e2e_test.go): its
# ipxe.efi speaks HTTPS and trusts the certificates of the UEFI firmware's CA store, where
# bookworm's iPXE (1.0.0+git-20190125) has no HTTPS at all. Fetched once into the lab cache,
# checked against its SHA-256 and unpacked there (never by the tests, never into the system).
# When trixie's ipxe is updated its pool drops this file: then take the new version and SHA-256.
cache=${IMAGED_LAB_CACHE:-/var/cache/imaged-lab}
ipxe_deb=ipxe_1.21.1+git20250501.dad20602+dfsg-1_all.deb
ipxe_sha256=eeaca79dbde0fb86c102bf1d362c6f6a67ed0ddab38b3dd12e1b332339f5dd99
ipxe_dir=$cache/ipxe-trixie
if [ "$(cat "$ipxe_dir/root.sha256" 2>/dev/null)" != "$ipxe_sha256" ]; then
  mkdir -p "$ipxe_dir"
  if ! echo "$ipxe_sha256  $ipxe_dir/$ipxe_deb" | sha256sum -c --status 2>/dev/null; then
    curl -fsSL --retry 3 -o "$ipxe_dir/$ipxe_deb.part" "http://deb.debian.org/debian/pool/main/i/ipxe/$ipxe_deb"
    if ! echo "$ipxe_sha256  $ipxe_dir/$ipxe_deb.part" | sha256sum -c --status; then
      echo "install-deps.sh: $ipxe_deb from deb.debian.org does not have SHA-256 $ipxe_sha256; not using it" >&2
      rm -f "$ipxe_dir/$ipxe_deb.part"; exit 1
    fi
    mv "$ipxe_dir/$ipxe_deb.part" "$ipxe_dir/$ipxe_deb"
  fi
  rm -rf "$ipxe_dir/root" "$ipxe_dir/root.tmp"
  dpkg-deb -x "$ipxe_dir/$ipxe_deb" "$ipxe_dir/root.tmp"
  mv "$ipxe_dir/root.tmp" "$ipxe_dir/root"
  echo "$ipxe_sha256" > "$ipxe_dir/root.sha256"
  echo "install-deps.sh: Debian trixie's iPXE unpacked in $ipxe_dir/root/usr/lib/ipxe"
fi
