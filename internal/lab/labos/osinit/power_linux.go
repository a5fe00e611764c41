package osinit

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imaged/imaged/internal/agent"
)

// The ACPI power button (what a BMC's graceful shutdown, or QEMU's system_powerdown, presses)
// reaches Linux as an ACPI fixed event. The kernel's button driver (module "button") turns it
// into a key press on an input device named "Power Button", which evdev (module "evdev") shows
// as /dev/input/eventN. On a full OS, systemd-logind or acpid reads it and shuts down; here PID 1
// reads it itself and powers off. Nothing is mounted from the disk, so there is nothing to
// unmount: sync and power off.

const (
	evKey    = 0x01 // EV_KEY, <linux/input-event-codes.h>
	keyPower = 116  // KEY_POWER
	// struct input_event is a struct timeval, then __u16 type, __u16 code, __s32 value.
	timevalLen    = int(unsafe.Sizeof(unix.Timeval{}))
	inputEventLen = timevalLen + 8
)

// watchPowerButton waits for the power button's input device (up to 10 s after the modules
// loaded) and powers the machine off when the button is pressed. It gives up quietly, with a
// console line, where there is no such device (no ACPI, or button/evdev not in the initramfs).
func watchPowerButton(ctx context.Context, con *agent.Console, log *slog.Logger) {
	var dev string
	for deadline := time.Now().Add(10 * time.Second); dev == "" && time.Now().Before(deadline); {
		dev = findPowerButton("/sys/class/input", "/dev/input")
		if dev == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if dev == "" {
		con.Say("no ACPI power button device (modules button and evdev?): a graceful shutdown will not power off")
		return
	}
	f, err := os.Open(dev)
	if err != nil {
		con.Say("power button %s: %v", dev, err)
		return
	}
	defer f.Close()
	con.Say("ACPI power button is %s: pressing it powers the machine off", dev)
	log.Debug("watching the power button", "device", dev)
	buf := make([]byte, inputEventLen*16)
	for ctx.Err() == nil {
		n, err := f.Read(buf)
		if err != nil {
			con.Say("power button %s: %v", dev, err)
			return
		}
		if powerPressed(buf[:n]) {
			powerOff(con)
		}
	}
}

// powerPressed reports whether the input events in buf include a press of KEY_POWER (a key
// press has value 1; 0 is the release and 2 autorepeat).
func powerPressed(buf []byte) bool {
	for off := 0; off+inputEventLen <= len(buf); off += inputEventLen {
		ev := buf[off+timevalLen:]
		typ, code := binary.NativeEndian.Uint16(ev), binary.NativeEndian.Uint16(ev[2:])
		if typ == evKey && code == keyPower && int32(binary.NativeEndian.Uint32(ev[4:])) == 1 {
			return true
		}
	}
	return false
}

// findPowerButton returns the device node of the input device named "Power Button", or "".
func findPowerButton(sysInput, devInput string) string {
	names, _ := filepath.Glob(filepath.Join(sysInput, "event*", "device", "name"))
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == "Power Button" {
			return filepath.Join(devInput, filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return ""
}

func powerOff(con *agent.Console) {
	if os.Getpid() != 1 {
		return // never power off anything but the booted image
	}
	con.Say("power button pressed: powering off")
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	con.Say("power off failed: %v", fmt.Errorf("reboot(POWER_OFF): %w", err))
}
