// Package dhcp is imaged's DHCPv4 service: an authoritative server for the chassis subnet or a
// proxyDHCP beside someone else's, which tells netbooting blades what to boot (PXE ROMs get an
// NBP over TFTP, UEFI HTTP boot gets a URL, iPXE gets its per-machine script).
//
// It is a protocol leaf: it knows nothing of jobs or storage. It asks an Inventory whether a MAC
// is one of ours, keeps leases through a LeaseStore and reports every client it hears to an
// Observer; cmd/imaged adapts those three to the store. Only cmd/imaged imports this package.
//
// Safe by default: only MACs found in the Inventory are answered (see UnknownPolicy).
package dhcp
