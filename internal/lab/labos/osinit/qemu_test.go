package osinit_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/initrd"
	"github.com/imaged/imaged/internal/lab"
	"github.com/imaged/imaged/internal/lab/labos"
	"github.com/imaged/imaged/internal/lab/netns"
)

// TestQEMUBootsImage builds the os image from Debian's kernel package, boots it from a virtio
// disk in QEMU (SeaBIOS → SYSLINUX's MBR → ldlinux → Linux → imaged's init in os mode), with
// dnsmasq for DHCP and a fake imaged in the lab's server namespace. It passes only when the
// OS checks in with exactly the digest computed on the host, fetched its metadata, answers the
// readiness probe with the digest and powers off on the ACPI power button. Then one byte of the
// file system's free space is flipped on the host and the image booted again: the check-in must
// carry the new digest, which proves that the OS hashes its disk rather than repeating a value.
//
// IMAGED_OS_INIT may name a build of imaged-labos-init to use as /init instead of the one the
// test builds.
func TestQEMUBootsImage(t *testing.T) {
	netns.RequireRoot(t)
	netns.RequireCommand(t, "qemu-system-x86_64", "qemu-system-x86")
	netns.RequireCommand(t, "dnsmasq", "dnsmasq")
	for _, c := range [][2]string{{"mkfs.fat", "dosfstools"}, {"syslinux", "syslinux"}, {"mcopy", "mtools"}} {
		netns.RequireCommand(t, c[0], c[1])
	}
	if _, err := os.Stat(labos.MBRCode); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing: CI must install syslinux-common", labos.MBRCode)
		}
		t.Skipf("skipping: %s missing (apt-get install syslinux-common)", labos.MBRCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()

	deb, err := initrd.DownloadKernel(ctx, cacheDir())
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("IMAGED_OS_INIT")
	if bin == "" {
		bin = buildInit(t, dir)
	}

	n := &lab.Network{Prefix: "imt-osimg", SrvIP: "10.99.0.1", CliIP: "10.99.0.2"}
	if n.Exists() {
		n.Down()
	}
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Down)
	startDnsmasq(t, n.Srv(), dir)
	api := &fakeImaged{checkIns: make(chan checkIn, 4)}
	ln := listenIn(t, n.Srv(), "10.99.0.1:0")
	srv := &http.Server{Handler: api}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := &url.URL{Scheme: "http", Host: ln.Addr().String()}

	start := time.Now()
	img := filepath.Join(dir, "os.img")
	res, err := labos.Build(ctx, labos.BuildOptions{Output: img, URL: base, Binary: bin, KernelDeb: deb})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s: %d MiB, %s, kernel %s (%.1f MiB), initramfs %.1f MiB with %d modules, in %v", filepath.Base(img), res.Size>>20,
		res.FileSystem, res.KernelVersion, float64(res.KernelSize)/(1<<20), float64(res.InitrdSize)/(1<<20), len(res.Modules),
		time.Since(start).Round(time.Millisecond))
	digest := hostDigest(t, img)
	if digest != res.Digest {
		t.Fatalf("Build says %s, the file on the host is %s", res.Digest, digest)
	}
	api.setAssigned(digest)
	// Byte-for-byte reproducible: the same inputs, built again elsewhere, give the same image.
	again, err := labos.Build(ctx, labos.BuildOptions{Output: filepath.Join(t.TempDir(), "again.img"), URL: base, Binary: bin, KernelDeb: deb})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != digest {
		t.Errorf("a second build of the same inputs is %s, the first %s", again.Digest, digest)
	}

	// First boot: the image as built.
	got, vm := bootAndCheckIn(t, ctx, n, api, dir, "os1", img)
	if got.digest != digest.String() {
		t.Errorf("the OS checked in with %s; the image on the host is %s", got.digest, digest)
	}
	if api.metadataCalls() == 0 {
		t.Error("the OS never asked for its metadata")
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`imaged os: metadata: \{"machine_id":"ms1-c9n1",.*"worker_type":"qemu-bios"`)); err != nil {
		t.Errorf("metadata not printed on the console: %v", err)
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`imaged os: check-in accepted \(200 after 2 attempts\): digest `+regexp.QuoteMeta(digest.String())+` stale=false`)); err != nil {
		t.Errorf("check-in answer not printed on the console: %v", err)
	}
	// The readiness probe, from the server's side as a job would do it.
	if line := probe(t, ctx, n.Srv(), got.ip); line != "imaged-os "+digest.String()+"\n" {
		t.Errorf("readiness probe read %q", line)
	}
	// A BMC's graceful shutdown: the ACPI power button. QEMU exits when the guest powers off.
	if err := qmp(vm.qmpPath, "system_powerdown"); err != nil {
		t.Errorf("QMP system_powerdown: %v", err)
	} else {
		select {
		case <-vm.Done():
			if _, err := vm.WaitFor(ctx, regexp.MustCompile(`imaged os: power button pressed`)); err != nil {
				t.Errorf("QEMU exited but not by the power button: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the OS did not power off within 30 s of the ACPI power button")
		}
	}
	vm.Stop()
	if after := hostDigest(t, img); after != digest {
		t.Fatalf("booting changed the image: %s, was %s", after, digest)
	}

	// Second boot: one byte flipped in the FAT's free space near the end of the disk, which
	// nothing reads at boot.
	flipByte(t, img, res.Size-4096-7)
	flipped := hostDigest(t, img)
	if flipped == digest {
		t.Fatal("flipping a byte did not change the host's digest")
	}
	got, vm = bootAndCheckIn(t, ctx, n, api, dir, "os2", img)
	if got.digest == digest.String() {
		t.Errorf("the OS checked in with the original digest %s after its disk changed", digest)
	}
	if got.digest != flipped.String() {
		t.Errorf("the OS checked in with %s; the changed image on the host is %s", got.digest, flipped)
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`imaged os: metadata: imaged assigns image `+regexp.QuoteMeta(digest.String())+` to ms1-c9n1, but this disk holds `+regexp.QuoteMeta(flipped.String()))); err != nil {
		t.Errorf("the OS did not notice that it runs another image than assigned: %v", err)
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`imaged os: check-in accepted .* stale=true`)); err != nil {
		t.Errorf("stale check-in not printed: %v", err)
	}
	vm.Stop()
}

// checkIn is one check-in that the fake imaged received.
type checkIn struct {
	digest string
	ip     string
	at     time.Time
}

// fakeImaged answers GET /api/v1/metadata and POST /api/v1/check-in as imaged will. The first
// check-in of each boot gets 503 with Retry-After: 1, so that the OS's retry runs for real.
type fakeImaged struct {
	mu       sync.Mutex
	assigned images.Digest
	metadata int
	posts    int
	checkIns chan checkIn
}

func (f *fakeImaged) setAssigned(d images.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assigned = d
}

func (f *fakeImaged) metadataCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.metadata
}

func (f *fakeImaged) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "GET" && r.URL.Path == "/api/v1/metadata":
		f.metadata++
		json.NewEncoder(w).Encode(labos.Metadata{MachineID: "ms1-c9n1", WorkerGroup: "lab", WorkerType: "qemu-bios",
			AssignedImage: f.assigned.String(), Hostname: "ms1-c9n1"})
	case r.Method == "POST" && r.URL.Path == "/api/v1/check-in":
		var req labos.CheckInRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		if _, err := images.ParseDigest(req.Digest); err != nil {
			http.Error(w, `{"error":"bad digest"}`, http.StatusBadRequest)
			return
		}
		f.posts++
		if f.posts%2 == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"busy"}`, http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(labos.CheckInResponse{Stale: req.Digest != f.assigned.String()})
		f.checkIns <- checkIn{digest: req.Digest, ip: ip, at: time.Now()}
	default:
		http.NotFound(w, r)
	}
}

type bootedVM struct {
	*lab.Running
	qmpPath string
}

// bootAndCheckIn boots img on a new tap and waits for the OS's accepted check-in.
func bootAndCheckIn(t *testing.T, ctx context.Context, n *lab.Network, api *fakeImaged, dir, name, img string) (checkIn, bootedVM) {
	t.Helper()
	tap, err := n.AddTap()
	if err != nil {
		t.Fatal(err)
	}
	qmpPath := filepath.Join(dir, name+".qmp")
	vm := &lab.VM{Name: name, Netns: n.Cli(), Tap: tap, MAC: "52:54:00:99:00:41", Firmware: "bios",
		Disk: img, Boot: "c", QMP: qmpPath, Dir: dir}
	r, err := vm.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Stop()
		console, _ := os.ReadFile(r.LogPath())
		if t.Failed() {
			t.Logf("--- console of %s (last 60 lines)\n%s", name, tail(console, 60))
			return
		}
		var os []string
		for _, l := range strings.Split(string(console), "\n") {
			if strings.Contains(l, "imaged os:") || strings.Contains(l, "Run /init") {
				os = append(os, l)
			}
		}
		t.Logf("--- %s: the os mode's console lines\n%s", name, strings.Join(os, "\n"))
	})
	select {
	case c := <-api.checkIns:
		t.Logf("%s: check-in from %s %.1f s after QEMU started; milestones:", name, c.ip, c.at.Sub(r.Started()).Seconds())
		for _, m := range r.Milestones() {
			t.Logf("  %6.2f s  %-22s %s", m.At.Seconds(), m.Name, m.Text)
		}
		for _, re := range []string{`SYSLINUX`, `imaged os: disk /dev/vda: digest`} {
			if l, err := r.WaitFor(ctx, regexp.MustCompile(re)); err == nil {
				t.Logf("  %6.2f s  %s", l.At.Seconds(), l.Text)
			}
		}
		return c, bootedVM{r, qmpPath}
	case <-r.Done():
		t.Fatalf("%s: QEMU exited before the OS checked in", name)
	case <-time.After(90 * time.Second):
		t.Fatalf("%s: no check-in within 90 s", name)
	}
	return checkIn{}, bootedVM{}
}

// buildInit builds imaged-labos-init, the static /init that runs agent.RunInit with the os mode.
func buildInit(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/imaged/imaged/internal/lab/cmd/imaged-labos-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cacheDir is where Debian's kernel package is kept between runs (shared with internal/lab's
// tests).
func cacheDir() string {
	if d := os.Getenv("IMAGED_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/imaged-lab"
}

// startDnsmasq runs dnsmasq as the DHCP server (only) on the server namespace's veth.
func startDnsmasq(t *testing.T, ns, dir string) {
	t.Helper()
	conf := filepath.Join(dir, "dnsmasq.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`port=0
interface=veth-srv
bind-interfaces
except-interface=lo
dhcp-range=10.99.0.100,10.99.0.200,255.255.255.0,1h
dhcp-authoritative
no-ping
dhcp-leasefile=%[1]s/leases
pid-file=%[1]s/dnsmasq.pid
log-dhcp
log-facility=%[1]s/dnsmasq.log
`, dir)), 0o644)
	cmd := lab.Command(context.Background(), ns, "dnsmasq", "--keep-in-foreground", "--conf-file="+conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// listenIn opens a TCP listener inside namespace ns: the socket stays there after the thread
// that made it switches back.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(self)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		if err2 := unix.Setns(self, unix.CLONE_NEWNET); err2 != nil {
			runtime.LockOSThread() // stuck in ns: let the runtime discard the thread
			return fmt.Errorf("cannot return from %s: %v", ns, err2)
		}
		return err
	}()
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func hostDigest(t *testing.T, path string) images.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var d images.Digest
	h.Sum(d[:0])
	return d
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// probe connects to the OS's readiness port from namespace ns and reads its line.
func probe(t *testing.T, ctx context.Context, ns, ip string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := lab.Dialer(ns)(ctx, "tcp", net.JoinHostPort(ip, fmt.Sprint(labos.DefaultReadyPort)))
	if err != nil {
		t.Errorf("readiness probe: %v", err)
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Errorf("readiness probe: read: %v", err)
	}
	return line
}

// qmp runs one command on QEMU's QMP socket: greeting, qmp_capabilities, command.
func qmp(path, command string) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(c)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if err := json.NewEncoder(c).Encode(map[string]string{"execute": cmd}); err != nil {
			return err
		}
		for {
			var msg map[string]json.RawMessage
			if err := dec.Decode(&msg); err != nil {
				return fmt.Errorf("%s: %w", cmd, err)
			}
			if e, ok := msg["error"]; ok {
				return fmt.Errorf("%s: %s", cmd, e)
			}
			if _, ok := msg["return"]; ok {
				break
			}
			// an asynchronous event: keep reading
		}
	}
	return nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
