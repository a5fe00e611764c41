package osinit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos"
)

// Run is the os mode after the early init: it hashes the first cfg.ImageSize bytes of the boot
// disk, brings up the NIC by DHCP, starts the readiness listener, prints imaged's metadata for
// this machine and checks in with the digest, then serves the readiness probe until ctx is done,
// when it returns nil. Any other return is fatal for this boot: no disk, a disk smaller than
// the image, no NIC or no lease, or the readiness port taken. A refused check-in is not: the OS
// stays up and says so on the console.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	con := agent.NewConsole(cfg.Console, Prefix)
	con.Say("imaged at %s; the image is the first %d bytes of the disk", cfg.URL, cfg.ImageSize)

	disk, err := bootDisk(ctx, &cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	digest, err := DiskDigest(ctx, disk.Path, cfg.ImageSize)
	if err != nil {
		return err
	}
	con.Say("disk %s: digest %s (%d bytes hashed in %.1fs)", disk.Path, digest, cfg.ImageSize, time.Since(start).Seconds())

	mac := cfg.MAC
	if len(mac) == 0 {
		if mac, err = onlyNIC(ctx, cfg.LinkTimeout); err != nil {
			return err
		}
	}
	link, err := agent.ConfigureNIC(ctx, agent.NIC{
		MAC: mac, VendorClass: cfg.VendorClass, Console: cfg.Console, Prefix: Prefix,
		ResolvConf: cfg.ResolvConf, LinkTimeout: cfg.LinkTimeout, DHCPTimeout: cfg.DHCPTimeout,
	}, log)
	if err != nil {
		return err
	}
	log = log.With("iface", link.Name, "addr", link.Addr)

	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.ReadyPort))
	if err != nil {
		return fmt.Errorf("osinit: readiness listener: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := serveReady(ctx, ln, labos.ReadyLine(digest), log); err != nil {
			con.Say("readiness listener stopped: %v", err)
		}
	})
	defer wg.Wait()
	con.Say("readiness probe: TCP port %d answers %q", cfg.ReadyPort, strings.TrimSpace(labos.ReadyLine(digest)))

	c := newClient(&cfg, log)
	mctx, cancel := context.WithTimeout(ctx, cfg.MetadataTimeout)
	md, raw, err := fetchMetadata(mctx, c, cfg.URL)
	cancel()
	switch {
	case err != nil:
		con.Say("metadata: %v", err)
	default:
		con.Say("metadata: %s", compactJSON(raw))
		if want, perr := images.ParseDigest(md.AssignedImage); perr == nil && want != digest {
			con.Say("metadata: imaged assigns image %s to %s, but this disk holds %s", want, md.MachineID, digest)
		}
	}

	res, a, err := checkIn(ctx, c, cfg.URL, digest)
	switch {
	case a.Status != 0 && err != nil:
		con.Say("check-in accepted (%d), but: %v", a.Status, err)
	case errors.Is(err, ErrRefused):
		con.Say("check-in refused: %v", err)
	case err != nil && ctx.Err() != nil:
		return nil
	case err != nil:
		con.Say("check-in failed: %v", err)
	default:
		con.Say("check-in accepted (%d after %d attempts): digest %s stale=%v", a.Status, a.Attempts, digest, res.Stale)
	}
	con.Say("up: %s on %s (%s), image %s", link.Name, link.Addr, mac, digest)
	<-ctx.Done()
	return nil
}

// onlyNIC waits until there is an Ethernet interface and returns its MAC; two are an error (the
// os mode does not guess: imaged.mac= names one).
func onlyNIC(ctx context.Context, timeout time.Duration) (net.HardwareAddr, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var found []net.Interface
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			if i.Flags&(net.FlagLoopback|net.FlagPointToPoint) == 0 && len(i.HardwareAddr) == 6 {
				found = append(found, i)
			}
		}
		switch len(found) {
		case 1:
			return found[0].HardwareAddr, nil
		case 0:
		default:
			var names []string
			for _, i := range found {
				names = append(names, i.Name+" "+i.HardwareAddr.String())
			}
			return nil, fmt.Errorf("osinit: %d Ethernet interfaces (%s): name one with imaged.mac=", len(found), strings.Join(names, ", "))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("osinit: no Ethernet interface after %v (err %v): is its driver in the initramfs?", timeout, err)
		case <-tick.C:
		}
	}
}

// compactJSON is b on one line, or b as it is if it is not JSON.
func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return snippet(b)
	}
	return buf.String()
}
