package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/netns"
)

// TestRunInNamespace runs the agent's Run for real inside a client namespace: dnsmasq gives the
// lease from the server namespace, where a hello server answers 503 and then 200. It checks the
// address and default route that the agent configured with `ip`, and what the server received.
func TestRunInNamespace(t *testing.T) {
	env := startAgentLab(t, false)
	var hello HelloRequest
	env.waitFile(t, "hello.json", 60*time.Second, func(b []byte) error { return json.Unmarshal(b, &hello) })
	if hello.MAC != env.mac || hello.Token != "tok-ns" || hello.AgentVersion == "" {
		t.Errorf("server received %+v", hello)
	}
	// The agent's address is not in the hello: the server reads it off the connection.
	var remote string
	env.waitFile(t, "hello.remote", 10*time.Second, func(b []byte) error { remote = string(b); return nil })
	ip := net.ParseIP(remote).To4()
	if ip == nil || ip[0] != 10 || ip[1] != 99 || ip[2] != 0 || ip[3] < 100 || ip[3] > 200 {
		t.Fatalf("hello from %q, not from the DHCP range", remote)
	}
	env.waitFile(t, "console.log", 10*time.Second, func(b []byte) error {
		if !bytes.Contains(b, []byte("imaged agent: hello accepted")) {
			return errors.New("not accepted yet")
		}
		return nil
	})
	console, _ := os.ReadFile(filepath.Join(env.dir, "console.log"))
	for _, want := range []string{
		"imaged agent: dc0 " + env.mac + " DHCP " + remote + "/24 gateway 10.99.0.1 server 10.99.0.1",
		"imaged agent: hello sent to http://10.99.0.1:",
	} {
		if !bytes.Contains(console, []byte(want)) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	addr := ipOut(t, env.ns, "-4", "addr", "show", "dev", "dc0")
	if !strings.Contains(addr, "inet "+remote+"/24 brd 10.99.0.255") {
		t.Errorf("dc0 is not configured with the lease:\n%s", addr)
	}
	if route := ipOut(t, env.ns, "-4", "route", "show", "default"); !strings.Contains(route, "default via 10.99.0.1 dev dc0") {
		t.Errorf("no default route via option 3:\n%s", route)
	}
	if n := env.helloCalls(t); n != 2 {
		t.Errorf("the server saw %d hellos, want 2 (503, then 200)", n)
	}
}

// TestRunRefusedInNamespace: a 403 from the server ends Run with ErrRefused. The lease here
// carries classless static routes (option 121), which replace option 3 (RFC 3442).
func TestRunRefusedInNamespace(t *testing.T) {
	env := startAgentLab(t, true)
	env.waitFile(t, "agent.err", 60*time.Second, func(b []byte) error {
		if !bytes.Contains(b, []byte("refused by imaged: agent: hello")) || !bytes.Contains(b, []byte("403")) {
			return fmt.Errorf("agent.err is %q", b)
		}
		return nil
	})
	routes := ipOut(t, env.ns, "-4", "route", "show")
	for _, want := range []string{"default via 10.99.0.1 dev dc0", "172.16.0.0/12 dev dc0 scope link", "192.168.77.0/24 via 10.99.0.3 dev dc0"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
}

type agentLab struct {
	dir, ns, mac string
}

func startAgentLab(t *testing.T, refuse bool) *agentLab {
	netns.RequireRoot(t)
	dnsmasq := netns.RequireCommand(t, "dnsmasq", "dnsmasq")
	p := netns.NewPair(t)
	env := &agentLab{dir: t.TempDir(), mac: "52:54:00:99:00:42"}
	env.ns, _ = p.AddClient(env.mac)

	// dnsmasq only with our own config: DHCP on veth-srv, no DNS (port=0), no ping check.
	conf := filepath.Join(env.dir, "dnsmasq.conf")
	os.WriteFile(conf, []byte(strings.Join([]string{
		"port=0", "interface=" + p.SrvIf, "bind-interfaces", "except-interface=lo",
		"dhcp-range=10.99.0.100,10.99.0.200,255.255.255.0,1h", "dhcp-authoritative", "no-ping",
		"dhcp-leasefile=" + filepath.Join(env.dir, "leases"), "log-dhcp", "log-facility=-",
	}, "\n")+"\n"), 0o644)
	if refuse {
		appendFile(conf, "dhcp-option=121,172.16.0.0/12,0.0.0.0,192.168.77.0/24,10.99.0.3,0.0.0.0/0,10.99.0.1\n")
	}
	cmd := netns.Command(context.Background(), p.Srv, dnsmasq, "--keep-in-foreground", "--pid-file="+filepath.Join(env.dir, "dnsmasq.pid"), "--conf-file="+conf)
	logw := &testWriter{t: t, prefix: "dnsmasq: "}
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logw.closed.Store(true)
	})

	srvEnv := []string{"IMAGED_TEST_DIR=" + env.dir}
	if refuse {
		srvEnv = append(srvEnv, "IMAGED_TEST_REFUSE=1")
	}
	netns.StartHelper(t, p.Srv, "TestHelperHelloServer", srvEnv...)
	var port string
	env.waitFile(t, "port", 20*time.Second, func(b []byte) error { port = string(b); return nil })
	cmdline := fmt.Sprintf("console=ttyS0 imaged.server=http://%s:%s imaged.token=tok-ns imaged.mac=%s", p.SrvIP, port, env.mac)
	netns.StartHelper(t, env.ns, "TestHelperAgent", "IMAGED_TEST_DIR="+env.dir, "IMAGED_TEST_CMDLINE="+cmdline)
	return env
}

// waitFile polls dir/name until it exists and check accepts its content.
func (e *agentLab) waitFile(t *testing.T, name string, timeout time.Duration, check func([]byte) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var b []byte
		if b, err = os.ReadFile(filepath.Join(e.dir, name)); err == nil {
			if err = check(b); err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	console, _ := os.ReadFile(filepath.Join(e.dir, "console.log"))
	t.Fatalf("%s: not there after %v: %v\nagent console:\n%s", name, timeout, err, console)
}

func (e *agentLab) helloCalls(t *testing.T) int {
	b, _ := os.ReadFile(filepath.Join(e.dir, "calls"))
	return bytes.Count(b, []byte("POST /agent/v1/hello "))
}

func ipOut(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestHelperHelloServer is the imaged server's hello endpoint, run by StartHelper inside the
// server namespace: it answers 503 once, then 200 (or always 403 with IMAGED_TEST_REFUSE=1).
func TestHelperHelloServer(t *testing.T) {
	if !netns.IsHelper("TestHelperHelloServer") {
		t.Skip("helper process for TestRunInNamespace")
	}
	dir := os.Getenv("IMAGED_TEST_DIR")
	ln, err := net.Listen("tcp4", "10.99.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n := calls.Add(1)
		appendFile(filepath.Join(dir, "calls"), fmt.Sprintf("%s %s %s\n", r.Method, r.URL.Path, body))
		switch {
		case r.URL.Path != "/agent/v1/hello":
			http.NotFound(w, r)
		case os.Getenv("IMAGED_TEST_REFUSE") == "1":
			http.Error(w, `{"error":"token refused"}`, http.StatusForbidden)
		case n == 1:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		default:
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			writeAtomic(filepath.Join(dir, "hello.remote"), []byte(host))
			writeAtomic(filepath.Join(dir, "hello.json"), body)
			io.WriteString(w, `{"machine_id":"ns-test","action":"wait","session":"s1"}`)
		}
	})}
	writeAtomic(filepath.Join(dir, "port"), []byte(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go srv.Serve(ln)
	<-ctx.Done()
	srv.Close()
}

// TestHelperAgent runs Run inside the client namespace for TestRunInNamespace.
func TestHelperAgent(t *testing.T) {
	if !netns.IsHelper("TestHelperAgent") {
		t.Skip("helper process for TestRunInNamespace")
	}
	dir := os.Getenv("IMAGED_TEST_DIR")
	cfg, err := ParseCmdline(os.Getenv("IMAGED_TEST_CMDLINE"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg.Console = io.MultiWriter(f, os.Stdout)
	cfg.ResolvConf = filepath.Join(dir, "resolv.conf") // never the host's
	cfg.HelloBackoff = 100 * time.Millisecond
	cfg.AgentVersion = "netns-test"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err = Run(ctx, cfg, testLog(t))
	writeAtomic(filepath.Join(dir, "agent.err"), []byte(fmt.Sprint(err)))
}

func appendFile(p, s string) {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		f.WriteString(s)
		f.Close()
	}
}

func writeAtomic(p string, b []byte) {
	os.WriteFile(p+".tmp", b, 0o644)
	os.Rename(p+".tmp", p)
}

type testWriter struct {
	t      *testing.T
	prefix string
	closed atomic.Bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	if !w.closed.Load() {
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			w.t.Log(w.prefix + l)
		}
	}
	return len(b), nil
}
