package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// command prepares a child that dies with the bench (SIGKILL if the bench's thread goes away).
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// loopCopy copies the image onto a loop device over a new sparse backing file.
func (e *env) loopCopy(ctx context.Context, direct string, verify bool) (time.Duration, error) {
	back := filepath.Join(e.dir, "loop-backing")
	os.Remove(back)
	if err := os.Truncate(back, e.m.Size); err != nil {
		if f, cerr := os.Create(back); cerr == nil {
			f.Close()
			err = os.Truncate(back, e.m.Size)
		}
		if err != nil {
			return 0, err
		}
	}
	defer e.clean(back)
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", back).Output()
	if err != nil {
		return 0, fmt.Errorf("losetup: %w", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	r, _, err := e.measure(ctx, e.copyArgv(e.goURL, dev, "-zeroed", "-direct", direct))
	if err != nil {
		return 0, err
	}
	if _, err := parseResult(r[0].out); err != nil {
		return 0, err
	}
	if !verify {
		return r[0].wall, nil
	}
	return r[0].wall, e.verify(ctx, dev)
}

func (e *env) startServers(ctx context.Context, img string) error {
	// imaged's stand-in.
	cmd := command(ctx, e.self, "serve", "-file", img, "-etag", e.etag)
	cmd.Stderr = e.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	e.stops = append(e.stops, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	e.goURL = fmt.Sprintf("http://%s/images/%s/blob", strings.TrimSpace(addr), e.m.Digest.Hex())

	// nginx, its own config, in the foreground, on 127.0.0.1 only. nginx cannot report a port it
	// chose, so the kernel picks one here first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(e.dir, "nginx.conf")
	os.MkdirAll(filepath.Join(e.dir, "nginx-tmp"), 0o755)
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 256; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	client_body_temp_path %[1]s/nginx-tmp;
	server {
		listen 127.0.0.1:%[2]d;
		root %[1]s/www;
	}
}
`, e.dir, port)), 0o644)
	if err != nil {
		return err
	}
	ngx := command(ctx, "nginx", "-c", conf, "-p", e.dir)
	// No Pdeathsig and no SIGKILL: a killed master would orphan its workers. SIGTERM makes the
	// master stop them; run.sh also stops it by its pid file.
	ngx.SysProcAttr = &syscall.SysProcAttr{}
	ngx.Cancel = func() error { return ngx.Process.Signal(syscall.SIGTERM) }
	ngx.Stderr = e.stderr
	if err := ngx.Start(); err != nil {
		return err
	}
	e.stops = append(e.stops, func() { ngx.Process.Signal(syscall.SIGTERM); ngx.Wait() })
	e.ngxURL = fmt.Sprintf("http://127.0.0.1:%d/img", port)
	for i := 0; ; i++ {
		err := exec.CommandContext(ctx, "curl", "-sf", "-r", "0-0", "-o", "/dev/null", e.ngxURL).Run()
		if err == nil {
			break
		}
		if i == 50 {
			return fmt.Errorf("nginx does not answer on %s: %w", e.ngxURL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return exec.CommandContext(ctx, "curl", "-sf", "-r", "0-0", "-o", "/dev/null", e.goURL).Run()
}

func versionOf(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return string(out)
}
