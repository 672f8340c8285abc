// Package promgarou exports a Garou server's Stats as Prometheus metrics.
// It is a module of its own, so that users of the library who do not use
// Prometheus never download its client.
//
//	reg.MustRegister(promgarou.NewCollector(srv))
//
// Every scrape takes one snapshot with Server.Stats. Metric names start
// with "garou_"; counters end in "_total".
package promgarou

import (
	"github.com/garou-chat/garou"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector of one server's Stats. It is safe for
// concurrent scrapes.
type Collector struct {
	srv *garou.Server
}

// NewCollector returns a Collector of srv's Stats.
func NewCollector(srv *garou.Server) *Collector { return &Collector{srv: srv} }

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*garou.Stats) float64
}

func gauge(name, help string, f func(*garou.Stats) int) metric {
	return metric{prometheus.NewDesc("garou_"+name, help, nil, nil), prometheus.GaugeValue,
		func(s *garou.Stats) float64 { return float64(f(s)) }}
}

func counter(name, help string, f func(*garou.Stats) uint64) metric {
	return metric{prometheus.NewDesc("garou_"+name+"_total", help, nil, nil), prometheus.CounterValue,
		func(s *garou.Stats) float64 { return float64(f(s)) }}
}

var (
	metrics = []metric{
		gauge("connections", "Open QUIC connections, handshakes included.", func(s *garou.Stats) int { return s.Connections }),
		gauge("handshakes", "Connections not yet welcomed.", func(s *garou.Stats) int { return s.Handshakes }),
		gauge("users", "Welcomed users.", func(s *garou.Stats) int { return s.Users }),
		gauge("rooms", "Rooms with members.", func(s *garou.Stats) int { return s.Rooms }),
		gauge("members", "Room memberships.", func(s *garou.Stats) int { return s.Members }),
		gauge("queued_bytes", "Bytes waiting in the send queues.", func(s *garou.Stats) int { return s.QueuedBytes }),
		gauge("max_queued_bytes", "Bytes waiting in the fullest send queue.", func(s *garou.Stats) int { return s.MaxQueuedBytes }),
		counter("welcomes", "Hellos accepted.", func(s *garou.Stats) uint64 { return s.Welcomes }),
		counter("resumes", "Hellos that resumed a session.", func(s *garou.Stats) uint64 { return s.Resumes }),
		counter("early_hellos", "Hellos that came in 0-RTT.", func(s *garou.Stats) uint64 { return s.EarlyHellos }),
		counter("early_replays", "0-RTT hellos sent missed texts before their handshake completed.", func(s *garou.Stats) uint64 { return s.EarlyReplays }),
		counter("texts", "Texts sequenced.", func(s *garou.Stats) uint64 { return s.Texts }),
		counter("deliveries", "Texts queued to members.", func(s *garou.Stats) uint64 { return s.Deliveries }),
		counter("directs", "Direct messages delivered.", func(s *garou.Stats) uint64 { return s.Directs }),
		counter("bytes_in", "Frame bytes read from clients.", func(s *garou.Stats) uint64 { return s.BytesIn }),
		counter("bytes_out", "Frame bytes written to clients.", func(s *garou.Stats) uint64 { return s.BytesOut }),
		counter("history_appends", "History store appends.", func(s *garou.Stats) uint64 { return s.HistoryAppends }),
		counter("history_errors", "History store appends that failed.", func(s *garou.Stats) uint64 { return s.HistoryErrors }),
		{prometheus.NewDesc("garou_history_seconds_total", "Time spent in history store appends.", nil, nil),
			prometheus.CounterValue, func(s *garou.Stats) float64 { return s.HistoryTime.Seconds() }},
	}
	refusals = prometheus.NewDesc("garou_refusals_total", "Requests and frames refused, by error code.", []string{"code"}, nil)
	closes   = prometheus.NewDesc("garou_closes_total", "Connections the server ended, by close code.", []string{"code"}, nil)
)

// Describe sends the descriptions of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
	ch <- refusals
	ch <- closes
}

// Collect sends the metrics of one Stats snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for _, m := range metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&st))
	}
	for code, n := range st.Refusals {
		ch <- prometheus.MustNewConstMetric(refusals, prometheus.CounterValue, float64(n), string(code))
	}
	for code, n := range st.Closes {
		ch <- prometheus.MustNewConstMetric(closes, prometheus.CounterValue, float64(n), code.String())
	}
}
