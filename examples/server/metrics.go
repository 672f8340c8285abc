package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/garou-chat/garou"
)

// serveMetrics serves /metrics (srv.Stats in Prometheus's text format)
// and /debug/pprof/ on addr, which must be a loopback address: neither is
// for the internet. It returns once listening, and stops when ctx ends.
func serveMetrics(ctx context.Context, addr string, srv *garou.Server, stderr io.Writer) (net.Addr, func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("-metrics %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, nil, fmt.Errorf("-metrics %q: metrics and pprof are served on a loopback address only", addr)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("-metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, srv.Stats())
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(stderr, "server: metrics:", err)
		}
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-done
	}
	return ln.Addr(), stop, nil
}

// writeMetrics writes st in Prometheus's text exposition format.
func writeMetrics(w io.Writer, st garou.Stats) {
	gauge := func(name, help string, v int) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge("garou_connections", "Open QUIC connections, handshakes included.", st.Connections)
	gauge("garou_handshakes", "Connections not yet welcomed.", st.Handshakes)
	gauge("garou_users", "Welcomed users.", st.Users)
	gauge("garou_rooms", "Rooms with members.", st.Rooms)
	gauge("garou_members", "Room memberships.", st.Members)
	gauge("garou_queued_bytes", "Bytes waiting in the send queues.", st.QueuedBytes)
	gauge("garou_max_queued_bytes", "Bytes waiting in the fullest send queue.", st.MaxQueuedBytes)
	counter("garou_welcomes_total", "Hellos accepted.", st.Welcomes)
	counter("garou_resumes_total", "Hellos that resumed a session.", st.Resumes)
	counter("garou_early_hellos_total", "Hellos that came in 0-RTT.", st.EarlyHellos)
	counter("garou_early_replays_total", "0-RTT hellos sent missed texts before their handshake completed.", st.EarlyReplays)
	counter("garou_texts_total", "Texts sequenced.", st.Texts)
	counter("garou_deliveries_total", "Texts queued to members.", st.Deliveries)
	counter("garou_directs_total", "Direct messages delivered.", st.Directs)
	counter("garou_bytes_in_total", "Frame bytes read from clients.", st.BytesIn)
	counter("garou_bytes_out_total", "Frame bytes written to clients.", st.BytesOut)
	counter("garou_history_appends_total", "History store appends.", st.HistoryAppends)
	counter("garou_history_errors_total", "History store appends that failed.", st.HistoryErrors)
	fmt.Fprintf(w, "# HELP garou_history_seconds_total Time spent in history store appends.\n# TYPE garou_history_seconds_total counter\ngarou_history_seconds_total %g\n",
		st.HistoryTime.Seconds())
	fmt.Fprintf(w, "# HELP garou_refusals_total Requests and frames refused, by error code.\n# TYPE garou_refusals_total counter\n")
	for _, code := range slices.Sorted(maps.Keys(st.Refusals)) {
		fmt.Fprintf(w, "garou_refusals_total{code=%q} %d\n", string(code), st.Refusals[code])
	}
	fmt.Fprintf(w, "# HELP garou_closes_total Connections the server ended, by close code.\n# TYPE garou_closes_total counter\n")
	for _, code := range slices.Sorted(maps.Keys(st.Closes)) {
		fmt.Fprintf(w, "garou_closes_total{code=%q} %d\n", code.String(), st.Closes[code])
	}
}
