package catalog

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	collected *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{collected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imaged_images_collected_total",
		Help: "What the daemon removed from the blob store: unregistered = images no catalog entry referenced, older than images.unregistered_grace; leftover = files of imports that died (temp files, blobs without a manifest).",
	}, []string{"what"})}
	for _, w := range []string{"unregistered", "leftover"} {
		m.collected.WithLabelValues(w)
	}
	if reg != nil {
		if err := reg.Register(m.collected); err != nil {
			return nil, fmt.Errorf("catalog: metrics: %w", err)
		}
	}
	return m, nil
}
