package tftp

import (
	"bufio"
	"io"
)

// netasciiReader converts a file to netascii on the fly. RFC 1350 defines netascii as
// "8 bit ascii with the modifications specified in" Telnet (RFC 764), where end of line is CR LF
// and a bare CR is sent as CR NUL. Boot firmware always asks for "octet"; the tftp-hpa client
// asks for netascii unless told "-m binary". The converted size is not known in advance, so a
// netascii transfer never answers tsize.
type netasciiReader struct {
	r       *bufio.Reader
	pending int // byte still owed after a CR, or -1
}

func newNetasciiReader(r *bufio.Reader) *netasciiReader { return &netasciiReader{r: r, pending: -1} }

func (n *netasciiReader) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		if n.pending >= 0 {
			p[i] = byte(n.pending)
			n.pending = -1
			i++
			continue
		}
		c, err := n.r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				return i, nil
			}
			return i, err
		}
		switch c {
		case '\n':
			p[i], n.pending = '\r', '\n'
		case '\r':
			p[i], n.pending = '\r', 0
		default:
			p[i] = c
		}
		i++
	}
	return i, nil
}
