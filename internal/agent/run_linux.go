package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Run brings up the NIC whose MAC is cfg.MAC, configures it by DHCP, says hello to cfg.Server,
// then waits for work until ctx is done, when it returns nil. Any other return is fatal for this
// boot: the interface never appeared, no DHCP lease, or the server refused or never answered.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	con := newConsole(cfg.Console)
	log = log.With("mac", cfg.MAC.String())

	con.say("waiting for the interface with MAC %s", cfg.MAC)
	ifc, err := waitInterface(ctx, cfg.MAC, cfg.LinkTimeout)
	if err != nil {
		return err
	}
	log = log.With("iface", ifc.Name)
	ctl, err := openIfctl()
	if err != nil {
		return err
	}
	defer ctl.Close()
	for _, name := range []string{"lo", ifc.Name} {
		if err := ctl.up(name); err != nil {
			return fmt.Errorf("agent: bring up %s: %w", name, err)
		}
	}
	start := time.Now()
	if err := ctl.waitCarrier(ctx, ifc.Name, cfg.CarrierTimeout); err != nil {
		// DHCP may still work (some drivers report carrier late); it has its own timeout.
		con.say("%s %s: %v; trying DHCP anyway", ifc.Name, cfg.MAC, err)
	} else {
		con.say("%s %s link up (carrier after %.1fs)", ifc.Name, cfg.MAC, time.Since(start).Seconds())
	}

	l, err := requestLease(ctx, ifc.Name, cfg.MAC, &cfg, log)
	if err != nil {
		return err
	}
	if err := ctl.setAddr(ifc.Name, l.Addr); err != nil {
		return fmt.Errorf("agent: configure %s: %w", ifc.Name, err)
	}
	if err := ctl.installRoutes(ifc.Name, l); err != nil {
		return err
	}
	if err := writeResolvConf(cfg.ResolvConf, l.DNS); err != nil {
		log.Warn("cannot write resolv.conf", "path", cfg.ResolvConf, "err", err)
	}
	gw := "none"
	for _, r := range l.routes() {
		if r.Dst.Bits() == 0 && r.Gateway.IsValid() {
			gw = r.Gateway.String()
		}
	}
	con.say("%s %s DHCP %s gateway %s server %s lease %v", ifc.Name, cfg.MAC, l.Addr, gw, l.ServerID, l.Duration)
	if l.MaskGuessed {
		log.Warn("DHCP server sent no subnet mask (option 1); using the classful default", "addr", l.Addr)
	}

	url := cfg.Server.JoinPath(HelloPath).String()
	client := &http.Client{Transport: &http.Transport{
		Proxy:               nil, // the agent talks to its server directly, whatever the environment says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}}
	con.say("hello sent to %s", url)
	res, err := sendHello(ctx, client, url, func() HelloRequest {
		return HelloRequest{
			MAC:           cfg.MAC.String(),
			Token:         cfg.Token,
			IP:            l.Addr.Addr().String(),
			AgentVersion:  cfg.AgentVersion,
			UptimeSeconds: uptime().Round(time.Millisecond).Seconds(),
		}
	}, &cfg, log)
	if err != nil {
		return err
	}
	log.Info("hello accepted", "status", res.Status, "attempts", res.Attempts, "response", snippet(res.Body))
	con.say("hello accepted; asking for work")
	return (&worker{cfg: &cfg, client: client, con: con, log: log}).loop(ctx)
}
