package dhcp

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// A reply that cannot be sent is logged with the client's MAC as text: slog writes a
// net.HardwareAddr, a byte slice without MarshalText, as its raw bytes ("RT\x00\x99\x00\x11").
func TestSendErrorLogsMACAsText(t *testing.T) {
	var logs bytes.Buffer
	s, err := build(Config{Mode: ModeProxy, Interface: "x", ServerIP: netip.MustParseAddr("10.99.0.1")},
		Deps{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // every write fails
	mac, _ := net.ParseMAC("52:54:00:99:00:11")
	reply, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
	if err != nil {
		t.Fatal(err)
	}
	s.send(&listener{conn: c}, reply, netip.MustParseAddrPort("127.0.0.1:68"), time.Now())
	if !strings.Contains(logs.String(), "msg=\"send reply\"") || !strings.Contains(logs.String(), " mac=52:54:00:99:00:11 ") {
		t.Errorf("log:\n%s", logs.String())
	}
}
