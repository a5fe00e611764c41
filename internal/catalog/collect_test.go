package catalog

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imaged/imaged/images"
)

// TestCollectorUnregistered: an image committed to the blob store but never registered (its
// import killed between the two) is removed by the daemon's collector once older than the grace,
// on the collector's own schedule, and not before; a registered image is never removed. The
// collector's ticker runs on synctest's clock; file ages are compared with a clock that starts at
// the real time and advances with it.
func TestCollectorUnregistered(t *testing.T) {
	w := newWorld(t)
	registered, orphan := w.commit(t), w.commit(t)
	if _, err := w.st.PutImage(images.Image{Name: "os", Version: "1", Digest: registered}); err != nil {
		t.Fatal(err)
	}
	blobs := w.blobs
	var logs bytes.Buffer // read once synctest.Test has joined the collector
	real0 := time.Now()
	synctest.Test(t, func(t *testing.T) {
		fake0 := time.Now()
		reg := prometheus.NewRegistry()
		c, err := NewCollector(w.cat, time.Hour, reg, slog.New(slog.NewTextHandler(&logs, nil)))
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
	if ents, _ := filepath.Glob(filepath.Join(w.dir, "images", "tmp", "*")); len(ents) != 0 {
		t.Errorf("tmp holds %v", ents)
	}
}

// Collect removes an unregistered image once older than the grace, never a registered one.
func TestCollect(t *testing.T) {
	w := newWorld(t)
	registered, orphan := w.commit(t), w.commit(t)
	w.register(t, "debian@1", registered)
	if got, err := w.cat.Collect(time.Now(), time.Hour); err != nil || len(got.Unregistered) != 0 || !w.blobs.Has(orphan) {
		t.Errorf("within the grace: %+v %v", got, err)
	}
	got, err := w.cat.Collect(time.Now().Add(2*time.Hour), time.Hour)
	if err != nil || len(got.Unregistered) != 1 || got.Unregistered[0] != orphan || w.blobs.Has(orphan) || !w.blobs.Has(registered) {
		t.Errorf("after the grace: %+v %v; orphan present %v, registered present %v", got, err, w.blobs.Has(orphan), w.blobs.Has(registered))
	}
}
