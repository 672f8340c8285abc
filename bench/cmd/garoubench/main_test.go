package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/garou-chat/garou/bench/internal/harness"
	"github.com/garou-chat/garou/bench/internal/netem"
)

// TestMain lets the test binary stand in for garoubench when the harness
// starts it as a load or server process.
func TestMain(m *testing.M) {
	if os.Getenv(harness.ChildEnv) != "" {
		os.Exit(harness.Main(os.Args[1:], impls))
	}
	os.Exit(m.Run())
}

// TestSmoke runs a tiny version of every scenario for every
// implementation, through the same processes as a real run.
func TestSmoke(t *testing.T) {
	for _, im := range impls {
		t.Run(im.Name, func(t *testing.T) {
			cfg := harness.DefaultConfig()
			cfg.Impls = im.Name
			cfg.BurstClients, cfg.BurstMsgs, cfg.Window = 4, 50, 8
			cfg.PacedClients, cfg.PacedRate, cfg.PacedDuration = 4, 200, 300*time.Millisecond
			cfg.IdleConns, cfg.Settle = 20, 50*time.Millisecond
			cfg.AcksClients, cfg.AcksRooms, cfg.AcksDuration = 4, 2, 300*time.Millisecond
			cfg.Scenarios = "burst,paced,idle,crowd,acks"
			want := 6
			if durable(im.Name) {
				// What differs with a durable store: sending.
				cfg.Scenarios, want = "burst,acks", 2
			}
			cfg.Crowds, cfg.CrowdBudget = "20,20/4", 30*time.Second
			cfg.Timeout = time.Minute
			results, err := harness.Run(context.Background(), cfg, impls, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(results) != want {
				t.Fatalf("got %d results, want %d", len(results), want)
			}
			for _, r := range results {
				if r.Errors != 0 || r.Lost != 0 || r.Received != r.Expected || r.Rate <= 0 {
					t.Errorf("%s: %+v", r.Scenario, r)
				}
				switch r.Scenario {
				case harness.Burst:
					if want := int64(4 * 4 * 50); r.Received != want {
						t.Errorf("burst received %d, want %d", r.Received, want)
					}
				case harness.Paced:
					if r.P50 <= 0 || r.P999 < r.P50 {
						t.Errorf("paced latencies p50 %v p99.9 %v", r.P50, r.P999)
					}
				case harness.Idle:
					if r.Received != 20 || r.LivePerConn <= 0 {
						t.Errorf("idle: %d connections, %v KiB live each", r.Received, r.LivePerConn)
					}
				case harness.Acks:
					if r.Rooms != 2 || r.Received == 0 || r.P50 <= 0 || r.P999 < r.P50 {
						t.Errorf("acks: %d rooms, %d texts acknowledged, p50 %v p99.9 %v ms", r.Rooms, r.Received, r.P50, r.P999)
					}
				case harness.Crowd:
					if !r.Finished || r.Connected != 20 || r.Received != 40 || r.P99 <= 0 || r.P99Next <= 0 || r.LivePerConn <= 0 {
						t.Errorf("crowd %s: finished %v, %d connected, %d received, p99 %v and %v ms, %v KiB live each",
							r.Crowd, r.Finished, r.Connected, r.Received, r.P99, r.P99Next, r.LivePerConn)
					}
				}
			}
			var b strings.Builder
			harness.WriteReport(&b, cfg, results)
			sections := []string{"## burst", "## paced", "## idle", "## crowd", "## acks", "| 20/4 | " + im.Name + " |"}
			if durable(im.Name) {
				sections = []string{"## burst", "## acks"}
			}
			for _, sc := range sections {
				if !strings.Contains(b.String(), sc) || !strings.Contains(b.String(), "| "+im.Name+" |") {
					t.Errorf("report lacks %q or the %s row:\n%s", sc, im.Name, b.String())
				}
			}
		})
	}
}

// durable reports whether name is Garou with a durable history store.
func durable(name string) bool { return strings.HasPrefix(name, "garou-") }

// TestDurableRatio runs burst and acks for Garou with its history in
// memory and with each durable store, and finds each durable one compared
// with the in-memory one in the report.
func TestDurableRatio(t *testing.T) {
	cfg := harness.DefaultConfig()
	cfg.Impls, cfg.Scenarios = "garou,garou-bolt,garou-pebble", "burst,acks"
	cfg.BurstClients, cfg.BurstMsgs, cfg.Window = 3, 20, 4
	cfg.AcksClients, cfg.AcksRooms, cfg.AcksDuration = 4, 4, 200*time.Millisecond
	cfg.Timeout = time.Minute
	results, err := harness.Run(context.Background(), cfg, impls, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 6 {
		t.Fatalf("got %d results, want 6", len(results))
	}
	for _, r := range results {
		if r.Errors != 0 || r.Lost != 0 || r.Rate <= 0 {
			t.Errorf("%s %s: %+v", r.Scenario, r.Impl, r)
		}
	}
	var b strings.Builder
	harness.WriteReport(&b, cfg, results)
	for _, want := range []string{
		"### burst: Garou with a durable history store ÷ Garou with its history in memory",
		"### acks: Garou with a durable history store ÷ Garou with its history in memory",
		"| garou-bolt | ", "| garou-pebble | ", "deliveries/s ÷ memory", "acknowledged texts/s ÷ memory",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestCrowdBudget checks that a crowd that cannot connect within its
// budget ends on time and says how far it got.
func TestCrowdBudget(t *testing.T) {
	cfg := harness.DefaultConfig()
	cfg.Impls, cfg.Scenarios = "quic-min", "crowd"
	cfg.Crowds, cfg.CrowdBudget, cfg.Settle = "500", 30*time.Millisecond, 10*time.Millisecond
	start := time.Now()
	results, err := harness.Run(context.Background(), cfg, impls, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the run took %v", d)
	}
	if len(results) != 1 {
		t.Fatalf("got %d results, want 1", len(results))
	}
	r := results[0]
	if r.Finished || r.Connected >= 500 || r.Errors != 0 || r.Expected != 0 {
		t.Errorf("finished %v, %d connected, %d errors (%s), %d expected", r.Finished, r.Connected, r.Errors, r.FirstErr, r.Expected)
	}
	var b strings.Builder
	harness.WriteReport(&b, cfg, results)
	if want := "did not finish within budget"; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}

// TestLossySmoke runs a short lossy scenario for every implementation
// inside the emulated network (root with nft, iptables and ping only):
// every delivery arrives, none sooner than the round trip, and the loss
// rule dropped packets.
func TestLossySmoke(t *testing.T) {
	if err := netem.Available(); err != nil {
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("takes about 15 s")
	}
	cfg := harness.DefaultConfig()
	cfg.Scenarios, cfg.LossyLoss = "lossy", "2"
	cfg.LossyClients, cfg.LossyRooms, cfg.LossyRate, cfg.LossyDuration = 16, 4, 200, time.Second
	cfg.Timeout = time.Minute
	cfg.Impls += ",garou-ws" // the WebSocket path too
	results, err := harness.Run(context.Background(), cfg, impls, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(strings.Split(cfg.Impls, ",")); len(results) != want { // the implementations named
		t.Fatalf("got %d results, want %d", len(results), want)
	}
	for _, r := range results {
		// 16 clients in 4 rooms: each text reaches 4 members.
		if r.Errors != 0 || r.Lost != 0 || r.Received != r.Expected || r.Expected != 4*200 {
			t.Errorf("%s: %d of %d deliveries, %d errors (%s)", r.Impl, r.Received, r.Expected, r.Errors, r.FirstErr)
		}
		if r.P50 < 20 || r.PingMs < 20 || r.Dropped <= 0 {
			t.Errorf("%s: p50 %.1f ms, ping %.1f ms, %.2f%% dropped: not on the emulated network", r.Impl, r.P50, r.PingMs, r.Dropped)
		}
		t.Logf("%s: p50 %.1f p99 %.1f p99.9 %.1f ms, %.2f%% of packets dropped", r.Impl, r.P50, r.P99, r.P999, r.Dropped)
	}
	var b strings.Builder
	harness.WriteReport(&b, cfg, results)
	if !strings.Contains(b.String(), "## lossy") || !strings.Contains(b.String(), "| 2% | garou |") {
		t.Errorf("report:\n%s", b.String())
	}
}
