package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RunInit is the agent as PID 1, the /init of the initramfs: it mounts /dev (devtmpfs), /proc,
// /sys and /tmp, puts stdin/stdout/stderr on /dev/console, reaps orphaned processes, reads its
// Config from /proc/cmdline, loads the kernel modules listed in /modules.order from /lib/modules,
// and calls Run. When the command line says imaged.mode=<name> and modes has that Mode, RunInit
// does the same early init and then runs the mode instead of the agent.
//
// PID 1 must never exit: the kernel would panic ("Attempted to kill init!") and the reason would
// scroll away. So whatever goes wrong (a bad command line, no NIC, no lease, a refused token, even
// a panic in Run), RunInit prints it loudly on the console and keeps the machine up for a human
// to read; it does not return while it is PID 1. Called in any other process it returns an error
// at once and touches nothing. log may be nil: RunInit then logs to the console.
func RunInit(ctx context.Context, log *slog.Logger, modes ...Mode) error {
	if os.Getpid() != 1 {
		return errors.New("agent: RunInit must run as PID 1 (the initramfs /init); use Run otherwise")
	}
	con := NewConsole(os.Stdout, Prefix)
	err := runInit(ctx, con, log, modes)
	holdForever(con, err)
	return err // not reached
}

func runInit(ctx context.Context, con *Console, log *slog.Logger, modes []Mode) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("agent: panic: %v\n%s", p, debug.Stack())
		}
	}()
	mountErr := mountBasics()
	setupConsole() // os.Stdout writes to fd 1, which is now /dev/console for sure
	cmdline, cerr := os.ReadFile("/proc/cmdline")
	var (
		mode    *Mode
		modeErr error
	)
	if cerr == nil {
		if mode, modeErr = pickMode(string(cmdline), modes); mode != nil {
			con.SetPrefix("imaged " + mode.Name + ": ")
		}
	}
	level := new(slog.LevelVar) // Info until the command line says imaged.debug=1
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
	}
	con.Say("starting %s as /init (kernel up %.2fs)", buildVersion(), uptime().Seconds())
	if mountErr != nil {
		// Loud, but go on: a missing /tmp should not stop a reimage.
		log.Error("mounting the basic filesystems", "err", mountErr)
	}
	go reapChildren(log)
	if cerr != nil {
		return fmt.Errorf("agent: read kernel command line: %w", cerr)
	}
	if modeErr != nil {
		return modeErr
	}
	if mode != nil {
		return runMode(ctx, con, log, level, *mode, string(cmdline))
	}
	cfg, err := ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	if cfg.Debug {
		level.Set(slog.LevelDebug)
	}
	if cfg.Modules {
		if err := loadModulesSay(con, log); err != nil {
			return err
		}
	}
	warnRandom(log)
	cfg.Console = os.Stdout
	cfg.ResolvConf = "/etc/resolv.conf"
	return Run(ctx, cfg, log)
}

// runMode finishes the early init for a Mode other than the agent and runs it.
func runMode(ctx context.Context, con *Console, log *slog.Logger, level *slog.LevelVar, mode Mode, cmdline string) error {
	modules, debug, err := initFlags(cmdline)
	if err != nil {
		return err
	}
	if debug {
		level.Set(slog.LevelDebug)
	}
	if modules {
		if err := loadModulesSay(con, log); err != nil {
			return err
		}
	}
	warnRandom(log)
	return mode.Run(ctx, cmdline, log)
}

func loadModulesSay(con *Console, log *slog.Logger) error {
	start := time.Now()
	loaded, total, err := loadModules("/modules.order", "/lib/modules", log)
	if err != nil {
		return err
	}
	con.Say("modules loaded: %d of %d in %.2fs", loaded, total, time.Since(start).Seconds())
	return nil
}

func warnRandom(log *slog.Logger) {
	if _, err := unix.Getrandom(make([]byte, 1), unix.GRND_NONBLOCK); errors.Is(err, unix.EAGAIN) {
		// Nothing on the way to hello needs it, but crypto/rand (TLS) would block until then.
		log.Warn("the kernel's random pool is not initialized yet (no RDRAND, no virtio-rng?)")
	}
}

// mountBasics mounts what an initramfs lacks. Already-mounted filesystems are fine.
func mountBasics() error {
	var errs []error
	for _, m := range []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"devtmpfs", "/dev", unix.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "/tmp", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// setupConsole points fds 0-2 at /dev/console. The kernel does this before starting /init when
// the rootfs has /dev/console (the initrd does); when it had none, init starts with no fds at
// all and every line would be lost, so do it again now that devtmpfs is mounted.
func setupConsole() {
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for _, to := range []int{0, 1, 2} {
		if fd != to {
			unix.Dup3(fd, to, 0)
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

// loadModules inserts dir/<name>.ko for each name in the order file, dependencies first as
// internal/initrd wrote them. A module that is already loaded (EEXIST) counts as loaded; one
// that fails is logged and skipped, since a driver for absent or odd hardware must not stop the
// boot. No order file means an initrd without modules: nothing to do.
func loadModules(orderFile, dir string, log *slog.Logger) (loaded, total int, err error) {
	b, err := os.ReadFile(orderFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("agent: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		total++
		if err := loadModule(filepath.Join(dir, name+".ko")); err != nil {
			log.Warn("module not loaded", "module", name, "err", err)
			continue
		}
		loaded++
	}
	return loaded, total, nil
}

func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = unix.FinitModule(fd, "", 0)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return fmt.Errorf("finit_module: %w", err)
}

// reapChildren waits for every child that exits. As PID 1 the agent inherits every orphaned
// process, whose zombies nobody else would collect.
//
// This steals the exit status of processes that the agent itself starts with os/exec
// (Cmd.Wait would see ECHILD). The agent starts none today; whatever later does must be waited
// for through here.
func reapChildren(log *slog.Logger) {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, unix.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
			log.Debug("reaped a child", "pid", pid, "status", ws.ExitStatus())
		}
		<-sig
	}
}

// holdForever prints why the agent stopped and keeps PID 1 alive, repeating the reason every
// few minutes for whoever attaches to the console later. It sleeps rather than blocking in an
// empty select{}, which the Go runtime may call a deadlock, and exit, once no other goroutine
// can run.
func holdForever(con *Console, err error) {
	if err == nil {
		err = errors.New("agent: stopped")
	}
	for {
		con.Say("FATAL: %v", err)
		con.Say("the machine stays up so this can be read; power-cycle it or start a new reimage")
		time.Sleep(5 * time.Minute)
	}
}
