package catalog

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/store"
)

// TestCollectorUnregistered: an image committed to the blob store but never registered (its
// import killed between the two) is removed by the daemon's collector once older than the grace,
// on the collector's own schedule, and not before; a registered image is never removed. The
// collector's ticker runs on synctest's clock; file ages are compared with a clock that starts at
// the real time and advances with it.
func TestCollectorUnregistered(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "imaged.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs, err := blobstore.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	imp := func() images.Digest {
		b := make([]byte, images.BlockSize+3)
		rand.Read(b)
		d, _, err := blobs.Import(t.Context(), bytes.NewReader(b), nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	registered, orphan := imp(), imp()
	if _, err := st.PutImage(images.Image{Name: "os", Version: "1", Digest: registered}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer // read once synctest.Test has joined the collector
	real0 := time.Now()
	synctest.Test(t, func(t *testing.T) {
		fake0 := time.Now()
		reg := prometheus.NewRegistry()
		c, err := NewCollector(New(st, blobs, nil), time.Hour, reg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		c.now = func() time.Time { return real0.Add(time.Since(fake0)) }
		if c.every != 10*time.Minute {
			t.Errorf("collects every %v, want 10m with a 1h grace", c.every)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()

		// At start and every 10 minutes up to 50: younger than the grace, the import may yet
		// register it.
		time.Sleep(59 * time.Minute)
		synctest.Wait()
		if !blobs.Has(orphan) {
			t.Fatal("collected before the grace ran out")
		}
		// The pass at 60 minutes.
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if blobs.Has(orphan) || !blobs.Has(registered) {
			t.Errorf("after the grace: unregistered present %v, registered present %v", blobs.Has(orphan), blobs.Has(registered))
		}
		if n := testutil.ToFloat64(c.metrics.collected.WithLabelValues("unregistered")); n != 1 {
			t.Errorf("imaged_images_collected_total{what=unregistered} = %v", n)
		}
		// A day later, the registered image is still there.
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if !blobs.Has(registered) {
			t.Error("a registered image was collected")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	if !strings.Contains(logs.String(), "digest="+orphan.String()) {
		t.Errorf("log:\n%s", logs.String())
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "images", "tmp", "*")); len(ents) != 0 {
		t.Errorf("tmp holds %v", ents)
	}
}
