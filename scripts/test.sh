#!/bin/sh
# test.sh — every test on a fresh Debian bookworm machine: install packages, vet, then go test
# for all packages. As root (as CI runs it) the network-namespace and QEMU end-to-end tests run
# too; as another user they skip with a message.
set -eu
cd "$(dirname "$0")/.."
# One cache of Debian's kernel package for the initrd and lab tests, and of trixie's iPXE, which
# install-deps.sh puts there.
export IMAGED_KERNEL_CACHE=${IMAGED_KERNEL_CACHE:-/var/cache/imaged-lab} IMAGED_LAB_CACHE=${IMAGED_LAB_CACHE:-/var/cache/imaged-lab}
if [ "$(id -u)" = 0 ]; then sh scripts/install-deps.sh; else echo "test.sh: not root: namespace and QEMU tests will skip"; fi
[ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH
export PATH
go mod download
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed on: $unformatted" >&2; exit 1; fi
go test -count=1 -timeout 20m "$@" ./...
