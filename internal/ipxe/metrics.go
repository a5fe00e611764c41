package ipxe

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	scripts    *prometheus.CounterVec
	assets     *prometheus.CounterVec
	assetBytes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_boot_scripts_total",
			Help: "iPXE scripts requested, by profile served or by refusal (unknown_mac, bad_request, refused: no boot token for that client, error).",
		}, []string{"outcome"}),
		assets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_boot_asset_requests_total",
			Help: "Boot asset requests over HTTP, by status.",
		}, []string{"status"}),
		assetBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imaged_boot_asset_bytes_total",
			Help: "Bytes of boot assets sent over HTTP.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.scripts, m.assets, m.assetBytes)
	}
	return m
}
