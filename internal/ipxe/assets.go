package ipxe

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// serveAsset serves one file from the first root that has it. os.Root confines the lookup: "..",
// absolute names and symlinks that leave the root fail. http.ServeContent answers Range and
// If-Range requests, and copying from an *os.File lets the kernel send it with sendfile.
func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	start := time.Now()
	f, st, err := h.open(name)
	if err != nil {
		status := http.StatusNotFound
		if !errors.Is(err, fs.ErrNotExist) {
			status = http.StatusForbidden
			h.deps.Log.Warn("boot asset refused", "name", name, "remote", r.RemoteAddr, "err", err)
		}
		h.metrics.assets.WithLabelValues(http.StatusText(status)).Inc()
		h.observe(name, r, status, 0, start)
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer f.Close()
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, st.Name(), st.ModTime(), f)
	h.metrics.assets.WithLabelValues(http.StatusText(cw.status())).Inc()
	h.metrics.assetBytes.Add(float64(cw.n))
	h.observe(name, r, cw.status(), cw.n, start)
}

func (h *Handler) observe(name string, r *http.Request, status int, n int64, start time.Time) {
	if h.deps.Observer != nil {
		h.deps.Observer.AssetServed(name, r.RemoteAddr, status, n, time.Since(start))
	}
}

// open finds name in the first root that holds it. Only a regular file is served: anything else
// there (a directory, a FIFO, a socket, a device) is an error that serveAsset refuses with 403.
func (h *Handler) open(name string) (*os.File, os.FileInfo, error) {
	if name == "" || strings.HasSuffix(name, "/") {
		return nil, nil, fs.ErrNotExist
	}
	for _, root := range h.roots {
		// O_NONBLOCK, as internal/tftp opens: opening a FIFO for reading otherwise blocks until
		// a writer comes, holding the handler and its connection. It has no effect on the reads
		// of a regular file.
		f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		st, err := f.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file but %s", name, kind(st.Mode()))
		}
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		return f, st, nil
	}
	return nil, nil, fs.ErrNotExist
}

// kind names a file type for the log line of a refusal.
func kind(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0:
		return "a device"
	default:
		return "of type " + t.String()
	}
}

// countingWriter records the status and body bytes of a response. It forwards ReadFrom so that
// io.Copy from a file still reaches the connection's sendfile path.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.ResponseWriter}, src)
	}
	c.n += n
	return n, err
}

func (c *countingWriter) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}
