// Command imaged is the bare-metal reimaging appliance: DHCP/proxyDHCP, TFTP and HTTP boot,
// the agent API, and (run as /init in the netboot initramfs) the agent itself.
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
