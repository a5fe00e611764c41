package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imaged/imaged/internal/agent"
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
	r, _, err := e.measure(ctx, e.copyArgv(e.imaged, dev, "-zeroed", "-direct", direct))
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

// server is one of the servers the bench measures.
type server struct {
	url string // the image
	pid int    // its process (nginx: the master; its workers count with it)
	ca  string // https: the certificate file curl and bmaptool trust
	pin string // https: the certificate's SHA-256, as the agent pins it (imaged.tls_sha256)
}

// curl is the argv of a curl that fetches the image from s to out, trusting s's certificate.
func (s server) curl(out string, flags ...string) []string {
	argv := append([]string{"curl", "-sf", "-o", out}, flags...)
	if s.ca != "" {
		argv = append(argv, "--cacert", s.ca)
	}
	return append(argv, s.url)
}

func (e *env) startServers(ctx context.Context, img string) error {
	// imaged as the product runs: the image imported into its blob store with `imaged image
	// import`, then `imaged serve` (DHCP and TFTP off) answering GET /images/{digest}/blob. Twice:
	// with http.tls off, where the plain listener serves the blob (the plain rows, like nginx
	// beside it), and as shipped, where only the HTTPS listener serves it, under the self-signed
	// certificate imaged makes in <state_dir>/tls at its first start, which the agent pins.
	var err error
	if e.imaged, err = e.startImaged(ctx, "imaged-state", img, false); err != nil {
		return err
	}
	if e.imagedTLS, err = e.startImaged(ctx, "imaged-tls-state", img, true); err != nil {
		return err
	}

	// nginx, its own config, in the foreground, on 127.0.0.1 only: one plain server (sendfile)
	// and one ssl server, on an RSA 2048 certificate like imaged's, made here.
	ngxCert, ngxKey := filepath.Join(e.dir, "nginx-cert.pem"), filepath.Join(e.dir, "nginx-key.pem")
	mk := exec.CommandContext(ctx, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-keyout", ngxKey, "-out", ngxCert, "-subj", "/O=imaged bench/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
	if out, err := mk.CombinedOutput(); err != nil {
		return fmt.Errorf("openssl req: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	tlsPort, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(e.dir, "nginx.conf")
	os.MkdirAll(filepath.Join(e.dir, "nginx-tmp"), 0o755)
	// The ssl server negotiates what Go's crypto/tls does as a server on AES-NI hardware: TLS 1.2
	// or 1.3, the server's preference, AES-128-GCM first (curl, OpenSSL, would pick AES-256-GCM
	// if nginx let it). Without `ssl_conf_command Options KTLS` nginx encrypts in user space and
	// does not use sendfile on TLS connections, as Go (no kTLS) does not either: like for like.
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
	server {
		listen 127.0.0.1:%[3]d ssl;
		root %[1]s/www;
		ssl_certificate %[4]s;
		ssl_certificate_key %[5]s;
		ssl_protocols TLSv1.2 TLSv1.3;
		ssl_prefer_server_ciphers on;
		ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305;
		ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
	}
}
`, e.dir, port, tlsPort, ngxCert, ngxKey)), 0o644)
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
	e.ngx = server{url: fmt.Sprintf("http://127.0.0.1:%d/img", port), pid: ngx.Process.Pid}
	e.ngxTLS = server{url: fmt.Sprintf("https://127.0.0.1:%d/img", tlsPort), pid: ngx.Process.Pid, ca: ngxCert}
	for _, s := range []server{e.ngx, e.ngxTLS} {
		if err := waitURL(ctx, s); err != nil {
			return fmt.Errorf("nginx: %w", err)
		}
	}
	return nil
}

// startImaged imports the image into a new state directory and serves it from there, in plain
// HTTP or (withTLS) over HTTPS only.
func (e *env) startImaged(ctx context.Context, state, img string, withTLS bool) (server, error) {
	port, err := freePort()
	if err != nil {
		return server{}, err
	}
	tlsConf := "{enabled: false}"
	var tlsPort int
	if withTLS {
		if tlsPort, err = freePort(); err != nil {
			return server{}, err
		}
		tlsConf = fmt.Sprintf("{enabled: true, listen: 127.0.0.1:%[1]d, public_url: https://127.0.0.1:%[1]d}", tlsPort)
	}
	conf := filepath.Join(e.dir, state+".yaml")
	// Every client of the bench comes from 127.0.0.1, where each blade has its own address: the
	// per-client connection cap (32) would count 8 agents × 4 connections as one client's.
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`version: 1
state_dir: %[1]s/%[2]s
log: {level: warn}
http: {listen: 127.0.0.1:%[3]d, public_url: http://127.0.0.1:%[3]d, tls: %[4]s, limits: {connections_per_client: 1024}}
dhcp: {mode: "off"}
tftp: {enabled: false}
boot: {assets_dir: %[1]s/imaged-boot}
`, e.dir, state, port, tlsConf)), 0o644)
	if err != nil {
		return server{}, err
	}
	os.MkdirAll(filepath.Join(e.dir, "imaged-boot"), 0o755)
	imp := command(ctx, e.imagedBin, "image", "import", "-config", conf, "bench@1", img)
	if out, err := imp.CombinedOutput(); err != nil {
		return server{}, fmt.Errorf("imaged image import: %v: %s", err, out)
	}
	cmd := command(ctx, e.imagedBin, "serve", "-config", conf)
	cmd.Stderr = e.stderr
	if err := cmd.Start(); err != nil {
		return server{}, err
	}
	e.stops = append(e.stops, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	s := server{url: fmt.Sprintf("http://127.0.0.1:%d/images/%s/blob", port, e.m.Digest.Hex()), pid: cmd.Process.Pid}
	if withTLS {
		s.url = fmt.Sprintf("https://127.0.0.1:%d/images/%s/blob", tlsPort, e.m.Digest.Hex())
		s.ca = filepath.Join(e.dir, state, "tls", "cert.pem")
	}
	if err := waitURL(ctx, s); err != nil {
		return server{}, fmt.Errorf("imaged serve: %w", err)
	}
	if withTLS {
		// What an operator pins: `openssl x509 -noout -fingerprint -sha256 -in cert.pem`.
		b, err := os.ReadFile(s.ca)
		if err != nil {
			return server{}, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return server{}, fmt.Errorf("%s: no PEM certificate", s.ca)
		}
		sum := sha256.Sum256(blk.Bytes)
		s.pin = hex.EncodeToString(sum[:])
	}
	return s, nil
}

// checkPin proves that the HTTPS rows measure the agent's pinned client: under another
// certificate's pin the copy must be refused at the handshake.
func (e *env) checkPin(ctx context.Context) error {
	bad := e.imagedTLS
	bad.pin = strings.Repeat("00", sha256.Size)
	r, _, err := e.measure(ctx, e.copyArgv(bad, "null"))
	switch {
	case err == nil:
		return fmt.Errorf("blockcopy took %s under a wrong pin: the HTTPS rows would not measure the agent's client", bad.url)
	case len(r) == 0:
		return err
	}
	if _, err := parseResult(r[0].out); err == nil || !strings.Contains(err.Error(), agent.ErrCertificate.Error()) {
		return fmt.Errorf("blockcopy under a wrong pin: want %q, got %v", agent.ErrCertificate, err)
	}
	return nil
}

// tlsOf says what curl and s agree on: "TLSv1.3 / TLS_AES_128_GCM_SHA256".
func tlsOf(ctx context.Context, s server) string {
	argv := s.curl("/dev/null", "-v", "-r", "0-0")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if _, v, ok := strings.Cut(l, "SSL connection using "); ok {
			return strings.TrimSpace(v)
		}
	}
	return fmt.Sprintf("? (%v)", err)
}

// cpuOf is the CPU time (user + system) that pid and its children have used so far, from /proc
// (in clock ticks, USER_HZ = 100 on Linux).
func cpuOf(pid int) (time.Duration, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue // not a process, or gone
		}
		// pid (comm) state ppid … utime stime: fields 1, 2, 3, 4, …, 14, 15 (proc(5)); comm may
		// hold spaces and parentheses, so count from its last ')'.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		self, ppid := ent.Name() == strconv.Itoa(pid), f[1] == strconv.Itoa(pid)
		if !self && !ppid {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// kTLS says whether this kernel could do TLS itself (the tls module's counters are there).
func kTLS() string {
	if _, err := os.Stat("/proc/net/tls_stat"); err != nil {
		return "this kernel has no kTLS (no /proc/net/tls_stat)"
	}
	return "this kernel has kTLS, left unused"
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

// waitURL waits up to 10 s for s to answer a one-byte range request (over https, under the
// certificate it is to present: imaged writes its own at its first start).
func waitURL(ctx context.Context, s server) error {
	for i := 0; ; i++ {
		argv := s.curl("/dev/null", "-r", "0-0")
		err := exec.CommandContext(ctx, argv[0], argv[1:]...).Run()
		if err == nil {
			return nil
		}
		if i == 100 {
			return fmt.Errorf("%s does not answer: %w", s.url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func versionOf(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return string(out)
}
