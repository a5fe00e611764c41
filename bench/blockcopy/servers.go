package main

import (
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
	// imaged as the product runs: the image imported into its blob store with `imaged image
	// import`, then `imaged serve` (DHCP and TFTP off) answering GET /images/{digest}/blob, in
	// plain HTTP like nginx beside it (http.tls off: the blob is served on the plain listener).
	port, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(e.dir, "imaged.yaml")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`version: 1
state_dir: %[1]s/imaged-state
log: {level: warn}
http: {listen: 127.0.0.1:%[2]d, public_url: http://127.0.0.1:%[2]d, tls: {enabled: false}}
dhcp: {mode: "off"}
tftp: {enabled: false}
boot: {assets_dir: %[1]s/imaged-boot}
`, e.dir, port)), 0o644)
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(e.dir, "imaged-boot"), 0o755)
	imp := command(ctx, e.imaged, "image", "import", "-config", conf, "bench@1", img)
	if out, err := imp.CombinedOutput(); err != nil {
		return fmt.Errorf("imaged image import: %v: %s", err, out)
	}
	cmd := command(ctx, e.imaged, "serve", "-config", conf)
	cmd.Stderr = e.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	e.stops = append(e.stops, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	e.goURL = fmt.Sprintf("http://127.0.0.1:%d/images/%s/blob", port, e.m.Digest.Hex())
	if err := waitURL(ctx, e.goURL); err != nil {
		return fmt.Errorf("imaged serve: %w", err)
	}

	// nginx, its own config, in the foreground, on 127.0.0.1 only.
	port, err = freePort()
	if err != nil {
		return err
	}
	conf = filepath.Join(e.dir, "nginx.conf")
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
	if err := waitURL(ctx, e.ngxURL); err != nil {
		return fmt.Errorf("nginx: %w", err)
	}
	return nil
}

// freePort has the kernel pick a free port on 127.0.0.1 (nginx cannot report one it chose).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitURL waits up to 10 s for u to answer a one-byte range request.
func waitURL(ctx context.Context, u string) error {
	for i := 0; ; i++ {
		err := exec.CommandContext(ctx, "curl", "-sf", "-r", "0-0", "-o", "/dev/null", u).Run()
		if err == nil {
			return nil
		}
		if i == 100 {
			return fmt.Errorf("%s does not answer: %w", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func versionOf(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return string(out)
}
