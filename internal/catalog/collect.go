package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images"
)

// Collection is what one Collect removed from the blob store.
type Collection struct {
	Unregistered []images.Digest // images no catalog entry referenced, older than the grace
	Leftovers    int             // files of imports that died: temp files, blobs without a manifest
}

// Collect removes from the blob store what nothing will ever use: the images no catalog entry
// references once older than grace (an import killed between committing its blob and registering
// it leaves one, which no plan names and no delete or prune would ever remove), and what
// interrupted imports left. Grace gives a live import the time between its commit and its
// registration; the catalog stays locked while Collect decides (Store.WithImageDigests), and
// Register checks the blob is still there once registered, so that no image is ever registered
// without its blob. What it removed is in the Collection even when it also fails.
func (s *Service) Collect(now time.Time, grace time.Duration) (Collection, error) {
	var c Collection
	if s.blobs == nil {
		return c, ErrNoBlobStore
	}
	var free func() error
	err := s.st.WithImageDigests(func(known map[images.Digest]bool) error {
		var err error
		c.Unregistered, free, err = s.blobs.Collect(now, grace, func(d images.Digest) bool { return known[d] })
		return err
	})
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("collect unregistered images: %w", err))
	}
	// The blobs leave tmp/ once the catalog is no longer held: removing large files takes a while.
	if free != nil {
		if err := free(); err != nil {
			errs = append(errs, fmt.Errorf("remove the blob of a collected image (the next collection will): %w", err))
		}
	}
	c.Leftovers, err = s.blobs.GC(grace)
	if err != nil {
		errs = append(errs, fmt.Errorf("remove what interrupted imports left: %w", err))
	}
	return c, errors.Join(errs...)
}

// Collector is the daemon's component that collects (Service.Collect) when it starts and then
// every min(grace/2, 10 minutes).
//
// imagehttp goes on serving any stored digest, the catalog's or not, until it is collected: its
// routes are anonymous by design and content-addressed (knowing a digest is knowing the bytes),
// an agent asks only for what its plan names, which the catalog gives, and asking the catalog
// on each of an agent's ranged GETs would put a bbolt scan on the sendfile path for nothing.
type Collector struct {
	svc     *Service
	grace   time.Duration
	every   time.Duration
	now     func() time.Time // file ages are compared with it
	log     *slog.Logger
	metrics *metrics
}

// NewCollector returns the collector of svc's blob store; its counters go to reg.
func NewCollector(svc *Service, grace time.Duration, reg prometheus.Registerer, log *slog.Logger) (*Collector, error) {
	if grace <= 0 {
		return nil, fmt.Errorf("catalog: the collection grace must be positive, not %v", grace)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Collector{svc: svc, grace: grace, every: min(grace/2, 10*time.Minute), now: time.Now, log: log, metrics: m}, nil
}

// Grace is how old an unregistered image must be before it is collected.
func (c *Collector) Grace() time.Duration { return c.grace }

// Run collects at once, then every few minutes until ctx is done.
func (c *Collector) Run(ctx context.Context) error {
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

func (c *Collector) collect() {
	got, err := c.svc.Collect(c.now(), c.grace)
	for _, d := range got.Unregistered {
		c.log.Info("removed an image no catalog entry references: its import ended between committing and registering it", "digest", d.String(), "grace", c.grace)
	}
	c.metrics.collected.WithLabelValues("unregistered").Add(float64(len(got.Unregistered)))
	c.metrics.collected.WithLabelValues("leftover").Add(float64(got.Leftovers))
	if got.Leftovers > 0 {
		c.log.Info("removed what interrupted imports left", "files", got.Leftovers)
	}
	if err != nil {
		c.log.Warn("cannot collect the blob store", "err", err)
	}
}
