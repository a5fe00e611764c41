// Command imaged is the bare-metal reimaging appliance: DHCP/proxyDHCP, TFTP and HTTP boot, the
// API and the agent API, and the CLI. The agent on the blades is another program,
// cmd/imaged-agent, which `imaged initrd build` puts in the netboot initramfs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaged:", err)
		os.Exit(exitCode(err))
	}
}
