//go:build !race

package main

// Built without the race detector: the reconnect scenario dials with
// 0-RTT, and quic-go v0.65 has a data race there (quic-go issue #4303;
// see zerortt_test.go in the root module). .ci/run runs it on its own
// without -race.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/garou-chat/garou/bench/internal/harness"
	"github.com/garou-chat/garou/bench/internal/netem"
)

// TestMobilitySmoke runs short reconnect and migrate scenarios inside the
// emulated network (root with nft, iptables and ping only): every
// reconnect is timed and the 0-RTT client's hellos came in 0-RTT, every
// move took, and nothing was lost.
func TestMobilitySmoke(t *testing.T) {
	if err := netem.Available(); err != nil {
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("takes about 5 s")
	}
	cfg := harness.DefaultConfig()
	cfg.Scenarios = "reconnect,migrate"
	cfg.ReconnectReps, cfg.MigrateDuration = 3, time.Second
	cfg.Timeout = time.Minute
	results, err := harness.Run(context.Background(), cfg, impls, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("got %d results, want 2 (garou alone, once per scenario)", len(results))
	}
	rtt := float64(cfg.LossyRTT) / 1e6
	for _, r := range results {
		if r.Impl != "garou" || r.Errors != 0 || r.Lost != 0 || r.Duplicated != 0 || r.PingMs < rtt {
			t.Errorf("%s: %+v", r.Scenario, r)
		}
		switch r.Scenario {
		case harness.Reconnect:
			if r.Reconnects != 6 || r.EarlyHellos != 3 || r.P50 < rtt || r.EarlyP50 < rtt {
				t.Errorf("reconnect: %d reconnects, %d hellos in 0-RTT, p50 %.1f and %.1f ms", r.Reconnects, r.EarlyHellos, r.P50, r.EarlyP50)
			}
		case harness.Migrate:
			if r.Moves != 3 || r.Received != r.Expected || r.MovePause <= 0 {
				t.Errorf("migrate: %d moves, %d of %d deliveries, pause %.1f ms", r.Moves, r.Received, r.Expected, r.MovePause)
			}
		}
	}
	var b strings.Builder
	harness.WriteReport(&b, cfg, results)
	for _, want := range []string{"## reconnect", "| `WithZeroRTT` |", "## migrate"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
