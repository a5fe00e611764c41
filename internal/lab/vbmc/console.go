package vbmc

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"time"
)

// maxTailLines and maxTailBytes bound a ?tail=N answer.
const (
	maxTailLines = 10000
	maxTailBytes = 4 << 20
)

// serveConsole is GET .../Oem/Imaged/ConsoleLog: the blade's serial console as text/plain.
// Without parameters it serves the whole file and honours Range (RFC 9110 14), so a client can
// follow it by asking for "bytes=N-"; ?tail=N answers the last N lines (at most 10000 lines or
// 4 MiB), which is what an operator wants to read why a boot failed.
func (sys *system) serveConsole(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	tail := -1
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, msgQueryValueFormat.info("", v, "tail"))
			return
		}
		tail = min(n, maxTailLines)
	}
	path := sys.blade.ConsolePath()
	var f *os.File
	err := fs.ErrNotExist
	if path != "" {
		f, err = os.Open(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		writeError(w, http.StatusNotFound, msgNoConsole.info("", sys.id))
		return
	}
	if err != nil {
		sys.srv.log.Error("console log", "system", sys.id, "err", err)
		writeError(w, http.StatusInternalServerError, msgInternalError.info(""))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if tail < 0 {
		st, err := f.Stat()
		var mod time.Time
		if err == nil {
			mod = st.ModTime()
		}
		http.ServeContent(w, r, "", mod, f)
		return
	}
	b, err := tailLines(f, tail)
	if err != nil {
		sys.srv.log.Error("console log", "system", sys.id, "err", err)
		writeError(w, http.StatusInternalServerError, msgInternalError.info(""))
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// tailLines returns the last n lines of f (a last line without a newline counts), reading
// backwards in blocks and never more than maxTailBytes.
func tailLines(f io.ReadSeeker, n int) ([]byte, error) {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil || n == 0 {
		return nil, err
	}
	const block = 32 << 10
	var buf []byte
	pos := end
	for pos > 0 && len(buf) < maxTailBytes {
		size := min(int64(block), pos)
		pos -= size
		chunk := make([]byte, size)
		if _, err := f.Seek(pos, io.SeekStart); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(f, chunk); err != nil {
			return nil, err
		}
		buf = append(chunk, buf...)
		// n lines need n newlines before them, not counting the file's final newline.
		body := bytes.TrimSuffix(buf, []byte("\n"))
		if bytes.Count(body, []byte("\n")) >= n {
			break
		}
	}
	body := bytes.TrimSuffix(buf, []byte("\n"))
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(body, '\n')
		if j < 0 {
			return limitFront(buf), nil // fewer than n lines: all of them
		}
		body = body[:j]
	}
	return limitFront(buf[len(body)+1:]), nil
}

// limitFront keeps the last maxTailBytes of b.
func limitFront(b []byte) []byte {
	if len(b) > maxTailBytes {
		return b[len(b)-maxTailBytes:]
	}
	return b
}
