package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/garou-chat/garou/bench/internal/mobility"
)

// mobilityImpl is the one implementation the reconnect and migrate
// scenarios measure: they time Garou's own reconnect (with and without
// 0-RTT) and Client.Migrate, which the baselines do not have.
const mobilityImpl = "garou"

// isMobility reports whether sc is one of the scenarios of package
// mobility, which run Garou alone on the emulated network, without loss.
func isMobility(sc string) bool { return sc == Reconnect || sc == Migrate }

// runMobility is a load process of the reconnect or migrate scenario: the
// server and the clients run in it, inside the orchestrator's network
// namespace.
func runMobility(ctx context.Context, cfg Config) Result {
	res := Result{Impl: mobilityImpl, Scenario: cfg.Scenarios}
	parent0, _ := cpuMicros(os.Getppid())
	c0 := cpuMark{load: selfCPU(), parent: parent0, host: hostBusy()}
	start := time.Now()
	switch cfg.Scenarios {
	case Reconnect:
		r, err := mobility.Reconnect(ctx, mobility.ReconnectConfig{Reps: cfg.ReconnectReps, Missed: cfg.ReconnectMissed})
		if err != nil {
			res.Errors, res.FirstErr = 1, err.Error()
			return res
		}
		plain, early := mobility.Quantile(r.Plain), mobility.Quantile(r.Early)
		res.Clients = 3
		res.Reconnects = plain.N + early.N
		res.P50, res.P90, res.Max = ms(plain.P50), ms(plain.P90), ms(plain.Max)
		res.EarlyP50, res.EarlyP90, res.EarlyMax = ms(early.P50), ms(early.P90), ms(early.Max)
		res.EarlyHellos = r.EarlyHellos
		res.Expected = int64(res.Reconnects * cfg.ReconnectMissed)
		res.Lost, res.Duplicated = int64(r.Lost), int64(r.Duplicated)
		res.Received = res.Expected - res.Lost
		if r.PlainEarly != 0 {
			res.Errors, res.FirstErr = 1, fmt.Sprintf("%d hellos of the client without 0-RTT came in 0-RTT", r.PlainEarly)
		}
	case Migrate:
		r, err := mobility.Migrate(ctx, mobility.MigrateConfig{Moves: cfg.MigrateMoves, Duration: cfg.MigrateDuration, Every: cfg.MigrateEvery})
		if err != nil {
			res.Errors, res.FirstErr = 1, err.Error()
			return res
		}
		res.Clients = 2
		res.Moves = len(r.Moves)
		res.Expected = int64(2 * r.Texts)
		res.Received = int64(r.MoverGot + r.StillGot)
		res.Lost = int64(r.Lost) + int64(r.Texts-r.StillGot)
		res.Duplicated = int64(r.Duplicated + r.Misordered + r.Gaps)
		res.MoverPause, res.StillPause = ms(r.MoverPause), ms(r.StillPause)
		for i, p := range r.MovePauses {
			res.MovePause = max(res.MovePause, ms(p))
			res.StillMovePause = max(res.StillMovePause, ms(r.StillMovePauses[i]))
		}
		for _, d := range r.Moves {
			res.MoveMs = max(res.MoveMs, ms(d))
		}
		var bad []string
		if r.Presence != 0 {
			bad = append(bad, fmt.Sprintf("%d presence changes told", r.Presence))
		}
		if r.Reconnects != 0 {
			bad = append(bad, fmt.Sprintf("%d reconnects", r.Reconnects))
		}
		if r.Sockets != cfg.MigrateMoves+1 {
			bad = append(bad, fmt.Sprintf("%d of %d sockets received packets", r.Sockets, cfg.MigrateMoves+1))
		}
		if len(bad) > 0 {
			res.Errors, res.FirstErr = int64(len(bad)), strings.Join(bad, ", ")
		}
	}
	res.Seconds = time.Since(start).Seconds()
	parent1, _ := cpuMicros(os.Getppid())
	res.LoadCPU = float64(selfCPU() - c0.load)
	busyShares(&res, c0, cpuMark{load: selfCPU(), parent: parent1, host: hostBusy()})
	return res
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// writeReconnect prints the reconnect table: the rounds' medians of each
// figure, without and with 0-RTT.
func writeReconnect(w io.Writer, cfg Config, results []Result) {
	_, by := group(results, Reconnect, "")
	s, ok := by[mobilityImpl]
	if !ok {
		return
	}
	rtt := float64(cfg.LossyRTT) / 1e6
	fmt.Fprintf(w, "\n## reconnect: the first missed text after the network comes back, over a loopback with %v round trip (ping: %s), no loss\n\n", cfg.LossyRTT, num(s.PingMs)+" ms")
	fmt.Fprintf(w, "Two clients take turns: a client's socket is closed under it (the server is not told), its next socket is held back while another member says %d texts, then let go; the time runs from then to the first missed text out of Receive. %d reconnects of each client per round; p50, p90 and max are over a round's reconnects, the table shows the median of the rounds.\n\n",
		cfg.ReconnectMissed, cfg.ReconnectReps)
	fmt.Fprintln(w, "| client | p50 ms | p90 ms | max ms | p50 ÷ RTT | p90 ÷ RTT | hellos in 0-RTT | CPU bench / other | lost | duplicated | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	fmt.Fprintf(w, "| without 0-RTT | %s | %s | %s | %.2f | %.2f | 0 | %.0f%% / %.0f%% | %d | %d | %s |\n",
		num(s.P50), num(s.P90), num(s.Max), s.P50/rtt, s.P90/rtt, s.Busy, s.Other, s.Lost, s.Duplicated, errCell(s))
	fmt.Fprintf(w, "| `WithZeroRTT` | %s | %s | %s | %.2f | %.2f | %d of %d | | | | |\n",
		num(s.EarlyP50), num(s.EarlyP90), num(s.EarlyMax), s.EarlyP50/rtt, s.EarlyP90/rtt, s.EarlyHellos, cfg.ReconnectReps)
	fmt.Fprintf(w, "\n0-RTT is sooner by %.2f RTT at p50, %.2f RTT at p90.\n", (s.P50-s.EarlyP50)/rtt, (s.P90-s.EarlyP90)/rtt)
}

// writeMigrate prints the migrate table.
func writeMigrate(w io.Writer, cfg Config, results []Result) {
	_, by := group(results, Migrate, "")
	s, ok := by[mobilityImpl]
	if !ok {
		return
	}
	rtt := float64(cfg.LossyRTT) / 1e6
	fmt.Fprintf(w, "\n## migrate: %d moves to a new socket mid-burst, over a loopback with %v round trip (ping: %s), no loss\n\n", cfg.MigrateMoves, cfg.LossyRTT, num(s.PingMs)+" ms")
	fmt.Fprintf(w, "A mover and a still client in one room each say a text every %v for %v (%s texts/s reach each); the mover calls Client.Migrate %d times, evenly spread, beside its sending. A pause is the time between two consecutive deliveries at a client; \"around moves\" is the longest that overlaps a move or the 100 ms after it, at the mover and at the still client over the same intervals. The table shows the median of the rounds.\n\n",
		cfg.MigrateEvery, cfg.MigrateDuration, num(2*float64(time.Second)/float64(cfg.MigrateEvery)), cfg.MigrateMoves)
	fmt.Fprintln(w, "| moves | longest pause around moves, mover ms | ÷ RTT | still ms | longest pause in the burst, mover ms | still ms | longest Migrate ms | CPU bench / other | lost | duplicated or out of order | errors |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	fmt.Fprintf(w, "| %d | %s | %.2f | %s | %s | %s | %s | %.0f%% / %.0f%% | %d | %d | %s |\n",
		s.Moves, num(s.MovePause), s.MovePause/rtt, num(s.StillMovePause), num(s.MoverPause), num(s.StillPause), num(s.MoveMs),
		s.Busy, s.Other, s.Lost, s.Duplicated, errCell(s))
}

// validateMobility checks the flags of the reconnect or migrate scenario.
func (c *Config) validateMobility(sc string) error {
	if c.LossyRTT <= 0 {
		return fmt.Errorf("%s: -lossy-rtt must be positive", sc)
	}
	switch sc {
	case Reconnect:
		if c.ReconnectReps < 1 || c.ReconnectMissed < 1 {
			return fmt.Errorf("reconnect: -reconnect-reps and -reconnect-missed must be at least 1")
		}
	case Migrate:
		if c.MigrateMoves < 1 || c.MigrateDuration <= 0 || c.MigrateEvery <= 0 || c.MigrateDuration < c.MigrateEvery*time.Duration(c.MigrateMoves+1) {
			return fmt.Errorf("migrate: want -migrate-moves >= 1, and -migrate-duration long enough for a text between moves")
		}
	}
	return nil
}
