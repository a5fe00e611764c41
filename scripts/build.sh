#!/bin/sh
# build.sh — build imaged's programs into bin/, static (CGO_ENABLED=0) and stamped with the
# version:
#   bin/imaged             the daemon, the CLI and the lab
#   bin/imaged-agent       the agent, /init of the netboot initramfs (`imaged initrd build` takes
#                          it from beside imaged): static because the initramfs has no libc
#   bin/imaged-labos-init  /init of the lab's bootable test OS (`imaged lab demo`); ships nowhere
set -eu
cd "$(dirname "$0")/.."
[ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH
v=$(git describe --always --dirty 2>/dev/null || echo dev)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/imaged/imaged/internal/version.Version=$v" -o bin/ \
	./cmd/imaged ./cmd/imaged-agent ./internal/lab/cmd/imaged-labos-init
echo "built bin/imaged, bin/imaged-agent and bin/imaged-labos-init ($v)"
