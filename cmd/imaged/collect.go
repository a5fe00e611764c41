package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/store"
)

// collector removes from the blob store, when the daemon starts and then every few minutes, what
// nothing will ever use: the temp files of imports that died (blobstore GC), and the images no
// catalog entry references once older than images.unregistered_grace: an import killed between
// committing its blob and registering it leaves one, which no plan names and no delete or prune
// would ever remove. Grace gives a live import the time between its commit and its registration;
// the catalog stays locked while the collector decides (store.WithImageDigests), and the register
// endpoint checks the blob is still there once registered, so that no image is ever registered
// without its blob.
//
// imagehttp goes on serving any stored digest, the catalog's or not, until it is collected: its
// routes are anonymous by design and content-addressed (knowing a digest is knowing the bytes),
// an agent asks only for what its plan names, which the catalog gives, and asking the catalog
// on each of an agent's ranged GETs would put a bbolt scan on the sendfile path for nothing.
type collector struct {
	blobs     *blobstore.Store
	st        *store.Store
	grace     time.Duration
	every     time.Duration
	now       func() time.Time // file ages are compared with it
	log       *slog.Logger
	collected *prometheus.CounterVec
}

func newCollector(blobs *blobstore.Store, st *store.Store, grace time.Duration, reg prometheus.Registerer, log *slog.Logger) *collector {
	c := &collector{blobs: blobs, st: st, grace: grace, every: min(grace/2, 10*time.Minute), now: time.Now, log: log,
		collected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_images_collected_total",
			Help: "What the daemon removed from the blob store: unregistered = images no catalog entry referenced, older than images.unregistered_grace; leftover = files of imports that died (temp files, blobs without a manifest).",
		}, []string{"what"}),
	}
	for _, w := range []string{"unregistered", "leftover"} {
		c.collected.WithLabelValues(w)
	}
	reg.MustRegister(c.collected)
	return c
}

// Run collects at once, then every c.every until ctx is done.
func (c *collector) Run(ctx context.Context) error {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		c.collect()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *collector) collect() {
	var ds []images.Digest
	var free func() error
	err := c.st.WithImageDigests(func(known map[images.Digest]bool) error {
		var err error
		ds, free, err = c.blobs.Collect(c.now(), c.grace, func(d images.Digest) bool { return known[d] })
		return err
	})
	for _, d := range ds {
		c.log.Info("removed an image no catalog entry references: its import ended between committing and registering it", "digest", d.String(), "grace", c.grace)
	}
	c.collected.WithLabelValues("unregistered").Add(float64(len(ds)))
	if free != nil {
		if ferr := free(); ferr != nil {
			c.log.Warn("cannot remove the blob of a collected image; the next collection will", "err", ferr)
		}
	}
	if err != nil {
		c.log.Warn("cannot collect unregistered images", "err", err)
	}
	n, err := c.blobs.GC(c.grace)
	c.collected.WithLabelValues("leftover").Add(float64(n))
	if err != nil {
		c.log.Warn("cannot remove what interrupted imports left", "err", err)
	} else if n > 0 {
		c.log.Info("removed what interrupted imports left", "files", n)
	}
}
