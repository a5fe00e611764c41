package initrd

import (
	"fmt"
	"io"
	"io/fs"
	"sort"
)

// The archive format is the SVR4 "newc" cpio that the kernel unpacks into its rootfs
// (Documentation/driver-api/early-userspace/buffer-format.rst):
//
//	"070701" then 13 fields of 8 ASCII hex digits: ino mode uid gid nlink mtime filesize
//	devmajor devminor rdevmajor rdevminor namesize check; the name with its NUL, padded to a
//	multiple of 4; the data, padded to a multiple of 4; last an entry named "TRAILER!!!".
//
// It is written here rather than with github.com/cavaliergopher/cpio (which the tests use to read
// the archive back): that writer leaves rdevmajor/rdevminor at zero, so it cannot create
// /dev/console, and it writes the "070702" magic into a package-level slice whenever a header
// carries a checksum, corrupting every later archive in the process.

// entry is one member of the archive.
type entry struct {
	name                 string      // no leading slash
	mode                 fs.FileMode // Go mode: type bits and permissions
	data                 []byte      // regular files only
	rdevMajor, rdevMinor uint32      // device nodes only
}

// fixedMtime is the modification time of every entry, so that output depends on content only.
const fixedMtime = 0

func sortEntries(es []entry) {
	// Plain byte order puts every directory before its contents ("lib" < "lib/modules" <
	// "lib/modules/x.ko"), which the kernel needs to create them.
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
}

// writeArchive writes the entries (in the given order) and the trailer, returning the bytes written.
func writeArchive(w io.Writer, es []entry) (int64, error) {
	cw := &countWriter{w: w}
	for i, e := range es {
		if err := writeEntry(cw, uint32(i+1), e); err != nil {
			return cw.n, fmt.Errorf("cpio %s: %w", e.name, err)
		}
	}
	if err := writeHeader(cw, "TRAILER!!!", 0, 0, 1, 0, 0, 0); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

func writeEntry(w *countWriter, ino uint32, e entry) error {
	mode, err := unixMode(e.mode)
	if err != nil {
		return err
	}
	nlink := uint32(1)
	if e.mode.IsDir() {
		nlink = 2
	}
	if len(e.data) > 0 && !e.mode.IsRegular() {
		return fmt.Errorf("data for a non-regular file")
	}
	if int64(len(e.data)) > 0xffffffff {
		return fmt.Errorf("file larger than 4 GiB, the newc limit")
	}
	if err := writeHeader(w, e.name, ino, mode, nlink, uint32(len(e.data)), e.rdevMajor, e.rdevMinor); err != nil {
		return err
	}
	if _, err := w.Write(e.data); err != nil {
		return err
	}
	return pad4(w)
}

func writeHeader(w *countWriter, name string, ino, mode, nlink, size, rdevMajor, rdevMinor uint32) error {
	// uid, gid (0:0), mtime, devmajor, devminor and check are all zero.
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, fixedMtime, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	if _, err := io.WriteString(w, h+name+"\x00"); err != nil {
		return err
	}
	return pad4(w)
}

func pad4(w *countWriter) error {
	if r := w.n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// unixMode maps a Go file mode to st_mode bits.
func unixMode(m fs.FileMode) (uint32, error) {
	const (
		sIFREG = 0o100000
		sIFDIR = 0o040000
		sIFCHR = 0o020000
		sISVTX = 0o001000
	)
	u := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		u |= sISVTX
	}
	switch {
	case m.IsRegular():
		return u | sIFREG, nil
	case m.IsDir():
		return u | sIFDIR, nil
	case m&fs.ModeCharDevice != 0:
		return u | sIFCHR, nil
	}
	return 0, fmt.Errorf("unsupported file type %v", m.Type())
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
