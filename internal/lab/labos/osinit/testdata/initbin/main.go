// Command initbin is the initramfs /init of osinit's QEMU test: exactly what cmd/imaged does as
// PID 1 once it passes osinit.Mode() to agent.RunInit, without the rest of imaged.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos/osinit"
)

func main() {
	if err := agent.RunInit(context.Background(), nil, osinit.Mode()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
