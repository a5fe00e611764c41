// Command imaged-labos-init is the /init of the bootable test OS that internal/lab/labos builds,
// which the lab's demo and end-to-end tests reimage blades with: the agent's early init (mounts,
// console, modules), then the os mode (internal/lab/labos/osinit: hash the disk, check in, serve
// the readiness probe), which the image's kernel command line selects with imaged.mode=os. It
// ships in the lab's images only; blades netboot imaged-agent.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos/osinit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// No logger of ours: RunInit logs to the console at the level imaged.debug= asks for.
	err := agent.RunInit(ctx, nil, osinit.Mode())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaged-labos-init:", err)
		os.Exit(1) // only outside PID 1: RunInit never returns as /init
	}
}
