#!/bin/sh
# build.sh — build the static imaged binary into bin/imaged. Static (CGO_ENABLED=0) because the
# same binary is /init in the netboot initramfs, where there is no libc.
set -eu
cd "$(dirname "$0")/.."
[ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH
v=$(git describe --always --dirty 2>/dev/null || echo dev)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/imaged/imaged/internal/version.Version=$v" -o bin/imaged ./cmd/imaged
echo "built bin/imaged ($v)"
