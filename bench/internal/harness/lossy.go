package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
	"github.com/garou-chat/garou/bench/internal/netem"
)

// parseLosses reads -lossy-loss: comma-separated loss rates in percent.
func parseLosses(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v < 0 || v > 50 {
			return nil, fmt.Errorf("loss %q: want a percentage from 0 to 50", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("-lossy-loss is empty")
	}
	return out, nil
}

// lossyNet is the emulated network of a lossy run: a private network
// namespace, its rules, and the round trip ping measured in it.
type lossyNet struct {
	ns   *netem.NS
	ping netem.Ping
}

// openLossy creates the namespace with cfg.LossyRTT of delay and no
// loss, and checks with ping that a round trip takes about that long.
func openLossy(ctx context.Context, cfg Config, progress io.Writer) (*lossyNet, error) {
	ns, err := netem.New()
	if err != nil {
		return nil, fmt.Errorf("the lossy scenario needs a network namespace: %w", err)
	}
	if err := ns.Set(0, cfg.LossyRTT/2); err != nil {
		ns.Close()
		return nil, err
	}
	// The fastest round trip shows the emulated delay; the average also
	// has the host's scheduling in it (the delay is a program reading a
	// queue), which a loaded host stretches by many milliseconds.
	p, err := ns.Ping(ctx, 20, 10*time.Millisecond)
	if err == nil && (p.Received != p.Sent || p.Min < cfg.LossyRTT || p.Min > cfg.LossyRTT+cfg.LossyRTT/4+2*time.Millisecond) {
		err = fmt.Errorf("ping over the emulated network: %d of %d replies, rtt min/avg/max %v/%v/%v, want about %v",
			p.Received, p.Sent, p.Min, p.Avg, p.Max, cfg.LossyRTT)
	}
	if err != nil {
		ns.Close()
		return nil, err
	}
	if progress != nil {
		fmt.Fprintf(progress, "emulated network: namespace up, ping %d/%d, rtt min/avg/max %v/%v/%v\n",
			p.Received, p.Sent, p.Min.Round(10*time.Microsecond), p.Avg.Round(10*time.Microsecond), p.Max.Round(10*time.Microsecond))
	}
	return &lossyNet{ns: ns, ping: p}, nil
}

// set applies a loss rate (percent, each way) with the configured delay.
func (n *lossyNet) set(cfg Config, lossPct float64) error {
	return n.ns.Set(lossPct, cfg.LossyRTT/2)
}

// start starts a load process inside the namespace.
func (n *lossyNet) start(cmd *exec.Cmd) error { return n.ns.Start(cmd) }

// note adds what the network did during one run to its result: the share
// of packets the loss rule dropped, the ping measured at the start, and an
// error if the queue reader failed.
func (n *lossyNet) note(res *Result) {
	res.PingMs = float64(n.ping.Avg) / 1e6
	if err := n.ns.Err(); err != nil {
		res.Errors++
		if res.FirstErr == "" {
			res.FirstErr = err.Error()
		}
	}
	dropped, passed, err := n.ns.Counters()
	if err == nil && dropped+passed > 0 {
		res.Dropped = 100 * float64(dropped) / float64(dropped+passed)
	}
}

func (n *lossyNet) close() error { return n.ns.Close() }

// lossy is a paced run over rooms: LossyClients clients, client i in room
// i mod LossyRooms, send LossyRate texts a second between them for
// LossyDuration; a text goes to the members of its sender's room. It runs
// inside the emulated network, whose loss rate the orchestrator set.
func lossy(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, res *Result, e *errs) {
	res.Rooms = cfg.LossyRooms
	res.Loss = cfg.LossyLoss // the orchestrator's spelling of cfg.Loss, which the report groups by
	pacedRooms(ctx, cfg, im, srv, cfg.LossyClients, cfg.LossyRooms, cfg.LossyRate, cfg.LossyDuration, res, e)
}
