package dhcp

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandlePacket feeds arbitrary bytes through the whole packet path (decode, Classify,
// policy, lease table, boot decision, reply encoding) in both modes and on both ports. It must
// never panic, and whatever it answers must decode as a BOOTREPLY to the same transaction.
func FuzzHandlePacket(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.bin")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range [][]byte{
		firmware(f, "52:54:00:aa:00:01", "PXEClient:Arch:00000:UNDI:002001", 0),
		firmware(f, "52:54:00:aa:00:05", "HTTPClient:Arch:00019:UNDI:003000", 19),
		firmware(f, "52:54:00:aa:00:07", "", -1, dhcpv4.WithRelay(netip.MustParseAddr("10.99.0.9").AsSlice())),
		firmware(f, "52:54:00:aa:00:08", "PXEClient", -1, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform),
			dhcpv4.WithClientIP(netip.MustParseAddr("10.99.0.150").AsSlice())),
		firmware(f, "52:54:00:aa:00:09", "", -1, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(netip.MustParseAddr("10.99.0.100").AsSlice()))),
		{},
	} {
		f.Add(b)
	}
	boot := testBoot()
	boot.ARM64File = "snp-arm64.efi"
	mk := func(mode Mode) *Server {
		s, err := build(Config{Mode: mode, Interface: "x", ServerIP: netip.MustParseAddr("10.99.0.1"),
			Subnet: netip.MustParsePrefix("10.99.0.0/24"), PoolStart: netip.MustParseAddr("10.99.0.100"),
			PoolEnd: netip.MustParseAddr("10.99.0.200"), Boot: boot, Unknown: UnknownNetboot},
			Deps{Leases: newMemStore(), Observer: &countingObserver{}})
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	servers := []*Server{mk(ModeServer), mk(ModeProxy)}
	src := netip.MustParseAddrPort("10.99.0.2:68")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range servers {
			for _, pxe := range []bool{false, true} {
				reply, _ := s.process(b, src, pxe)
				if reply == nil {
					continue
				}
				back, err := dhcpv4.FromBytes(reply.ToBytes())
				if err != nil {
					t.Fatalf("reply does not decode: %v", err)
				}
				req, _ := dhcpv4.FromBytes(b)
				if back.OpCode != dhcpv4.OpcodeBootReply || back.TransactionID != req.TransactionID {
					t.Fatalf("reply is not a BOOTREPLY to xid %v: %s", req.TransactionID, back.Summary())
				}
			}
		}
	})
}

type countingObserver struct{ n int }

func (o *countingObserver) Observe(Observation) { o.n++ }
