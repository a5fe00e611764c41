package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imaged/imaged/internal/agentapi"
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
	con := NewConsole(cfg.Console, Prefix)
	log = log.With("mac", cfg.MAC.String())
	l, err := bringUp(ctx, &cfg, con, log)
	if err != nil {
		return err
	}
	log = log.With("iface", l.Name)

	url := cfg.Server.JoinPath(HelloPath).String()
	client := cfg.apiClient()
	con.Say("hello sent to %s", url)
	res, err := sendHello(ctx, client, url, func() HelloRequest {
		return HelloRequest{
			MAC:           cfg.MAC.String(),
			Token:         cfg.Token,
			AgentVersion:  cfg.AgentVersion,
			UptimeSeconds: uptime().Round(time.Millisecond).Seconds(),
		}
	}, &cfg, log)
	if err != nil {
		return err
	}
	log.Info("hello accepted", "status", res.Status, "attempts", res.Attempts)
	var reply agentapi.HelloReply
	if err := json.Unmarshal(res.Body, &reply); err != nil {
		return fmt.Errorf("agent: the hello's reply is not JSON: %w", err)
	}
	if reply.Session == "" {
		// A discovery boot (a MAC imaged does not know): there is no work for it.
		con.Say("hello accepted as a discovery boot: this machine is not in imaged's inventory; nothing to do")
		<-ctx.Done()
		return nil
	}
	con.Say("hello accepted (machine %s); asking for work", reply.MachineID)
	return (&worker{cfg: &cfg, client: client, session: reply.Session, con: con, log: log}).loop(ctx)
}

// bringUp waits for the NIC with cfg.MAC, brings it up, gets a DHCP lease and configures the
// address, the routes and resolv.conf: everything the agent does before hello.
func bringUp(ctx context.Context, cfg *Config, con *Console, log *slog.Logger) (Link, error) {
	con.Say("waiting for the interface with MAC %s", cfg.MAC)
	ifc, err := waitInterface(ctx, cfg.MAC, cfg.LinkTimeout)
	if err != nil {
		return Link{}, err
	}
	log = log.With("iface", ifc.Name)
	ctl, err := openIfctl()
	if err != nil {
		return Link{}, err
	}
	defer ctl.Close()
	for _, name := range []string{"lo", ifc.Name} {
		if err := ctl.up(name); err != nil {
			return Link{}, fmt.Errorf("agent: bring up %s: %w", name, err)
		}
	}
	start := time.Now()
	if err := ctl.waitCarrier(ctx, ifc.Name, cfg.CarrierTimeout); err != nil {
		// DHCP may still work (some drivers report carrier late); it has its own timeout.
		con.Say("%s %s: %v; trying DHCP anyway", ifc.Name, cfg.MAC, err)
	} else {
		con.Say("%s %s link up (carrier after %.1fs)", ifc.Name, cfg.MAC, time.Since(start).Seconds())
	}

	l, err := requestLease(ctx, ifc.Name, cfg.MAC, cfg, log)
	if err != nil {
		return Link{}, err
	}
	if err := ctl.setAddr(ifc.Name, l.Addr); err != nil {
		return Link{}, fmt.Errorf("agent: configure %s: %w", ifc.Name, err)
	}
	if err := ctl.installRoutes(ifc.Name, l); err != nil {
		return Link{}, err
	}
	if err := writeResolvConf(cfg.ResolvConf, l.DNS); err != nil {
		log.Warn("cannot write resolv.conf", "path", cfg.ResolvConf, "err", err)
	}
	gw := "none"
	if g := l.defaultGateway(); g.IsValid() {
		gw = g.String()
	}
	con.Say("%s %s DHCP %s gateway %s server %s lease %v", ifc.Name, cfg.MAC, l.Addr, gw, l.ServerID, l.Duration)
	if l.MaskGuessed {
		log.Warn("DHCP server sent no subnet mask (option 1); using the classful default", "addr", l.Addr)
	}
	return Link{Name: ifc.Name, MAC: cfg.MAC, Addr: l.Addr, Gateway: l.defaultGateway(), ServerID: l.ServerID, Lease: l.Duration}, nil
}

// ConfigureNIC does for another init Mode what Run does before hello: it waits for the NIC with
// n.MAC, brings it up, gets a DHCP lease (with the agent's retries and timeouts) and configures
// its address, routes and resolv.conf, printing the same milestone lines with n.Prefix.
func ConfigureNIC(ctx context.Context, n NIC, log *slog.Logger) (Link, error) {
	if len(n.MAC) == 0 {
		return Link{}, errors.New("agent: ConfigureNIC: no MAC address")
	}
	cfg := Config{
		MAC: n.MAC, Console: n.Console, ResolvConf: n.ResolvConf, vendorClass: n.VendorClass,
		LinkTimeout: n.LinkTimeout, CarrierTimeout: n.CarrierTimeout, DHCPTimeout: n.DHCPTimeout,
		DHCPAttemptRetry: n.DHCPAttemptRetry,
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	con := NewConsole(cfg.Console, cmp.Or(n.Prefix, Prefix))
	return bringUp(ctx, &cfg, con, log.With("mac", n.MAC.String()))
}
