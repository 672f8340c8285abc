package mobility

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/garou-chat/garou"
)

// MigrateConfig is what Migrate does.
type MigrateConfig struct {
	// Moves is how many times the mover moves to a new socket, evenly
	// spread over the burst.
	Moves int
	// Duration is how long the burst lasts; Every is how often each of
	// the two clients says a text during it.
	Duration, Every time.Duration
}

// MigrateResult is what Migrate measured.
type MigrateResult struct {
	// Texts is how many texts were said; MoverGot and StillGot how many
	// each client received.
	Texts, MoverGot, StillGot int
	// MoverPause and StillPause are the longest time between two
	// consecutive deliveries at each client during the burst.
	MoverPause, StillPause time.Duration
	// MovePauses is, for each move, the longest time between two
	// consecutive deliveries at the mover that overlaps the move: from
	// the start of Migrate to 100 ms after it returned. StillMovePauses
	// is the same at the still client: a pause both have is the host's
	// or the server's, not the move's.
	MovePauses, StillMovePauses []time.Duration
	// Moves is how long each Migrate call took.
	Moves []time.Duration
	// Lost, Duplicated and Misordered compare the mover's sequence with
	// the still client's: texts it lacks, has twice, or has out of order.
	// Gaps counts the gap notices either received.
	Lost, Duplicated, Misordered, Gaps int
	// Presence counts joins, leaves and presence frames either client
	// was told during the burst (there should be none: nobody left).
	Presence int
	// Reconnects counts the mover's connection state changes after it
	// connected (there should be none).
	Reconnects int
	// Sockets is how many of the mover's sockets received packets: its
	// first and one per move, if every move took.
	Sockets int
}

// Migrate measures the delivery pauses of a client that moves its
// connection to a new UDP socket cfg.Moves times in the middle of a
// burst (garou.Client.Migrate, as a phone that leaves Wi-Fi for
// cellular), against a client in the same room that never moves. Both
// say a text every cfg.Every, in turn, for cfg.Duration; the mover's
// moves run beside its sending, as a device's would.
func Migrate(ctx context.Context, cfg MigrateConfig) (MigrateResult, error) {
	var res MigrateResult
	if cfg.Moves < 1 || cfg.Duration <= 0 || cfg.Every <= 0 {
		return res, errors.New("mobility: Moves, Duration and Every must be positive")
	}
	s, err := startServer()
	if err != nil {
		return res, err
	}
	defer s.stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+30*time.Second)
	defer cancel()

	states := make(chan garou.ConnState, 64)
	var sockMu sync.Mutex
	var socks []*countingConn
	mover, err := s.dial(ctx, "mover", garou.WithStateHandler(func(sc garou.StateChange) {
		select {
		case states <- sc.State:
		default:
		}
	}), garou.WithPacketConn(func(context.Context) (net.PacketConn, error) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c := &countingConn{PacketConn: pc}
		sockMu.Lock()
		socks = append(socks, c)
		sockMu.Unlock()
		return c, nil
	}))
	if err != nil {
		return res, err
	}
	defer mover.Close()
	still, err := s.dial(ctx, "still")
	if err != nil {
		return res, err
	}
	defer still.Close()
	// The mover is told of the still client's join before the burst;
	// nothing of the kind may come after.
	for {
		m, err := mover.Receive(ctx)
		if err != nil {
			return res, err
		}
		if m.Type == garou.TypeJoin || m.Type == garou.TypePresence {
			break
		}
	}

	n := int(cfg.Duration / cfg.Every)
	res.Texts = 2 * n
	type log struct {
		seqs []uint64
		at   []time.Time
		gaps int
	}
	logs := [2]log{}
	presence := make([]int, 2)
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var readers sync.WaitGroup
	for i, c := range []*garou.Client{mover, still} {
		readers.Go(func() {
			for len(logs[i].seqs) < res.Texts {
				m, err := c.Receive(rctx)
				if err != nil {
					return
				}
				switch m.Type {
				case garou.TypeText:
					logs[i].seqs = append(logs[i].seqs, m.Seq)
					logs[i].at = append(logs[i].at, time.Now())
				case garou.TypeGap:
					logs[i].gaps++
				case garou.TypeJoin, garou.TypeLeave, garou.TypePresence:
					presence[i]++
				}
			}
		})
	}

	start := time.Now().Add(100 * time.Millisecond)
	var senders sync.WaitGroup
	var errMu sync.Mutex
	var sendErr error
	for i, c := range []*garou.Client{mover, still} {
		senders.Go(func() {
			var inflight sync.WaitGroup
			defer inflight.Wait()
			sem := make(chan struct{}, 256)
			for k := range n {
				due := start.Add(time.Duration(2*k+i) * cfg.Every / 2)
				if !sleepUntil(ctx, due) {
					return
				}
				sem <- struct{}{}
				inflight.Go(func() {
					defer func() { <-sem }()
					if _, err := c.SendTo(ctx, room, strconv.Itoa(i)+" "+strconv.Itoa(k)); err != nil {
						errMu.Lock()
						sendErr = errors.Join(sendErr, err)
						errMu.Unlock()
					}
				})
			}
		})
	}
	type move struct{ from, to time.Time }
	var moves []move
	var moveErr error
	for k := 1; k <= cfg.Moves; k++ {
		if !sleepUntil(ctx, start.Add(cfg.Duration*time.Duration(k)/time.Duration(cfg.Moves+1))) {
			break
		}
		from := time.Now()
		if err := mover.Migrate(ctx); err != nil {
			moveErr = fmt.Errorf("mobility: move %d: %w", k, err)
			break
		}
		moves = append(moves, move{from, time.Now()})
		res.Moves = append(res.Moves, time.Since(from))
	}
	senders.Wait()
	// Every text has been acknowledged: what has not arrived within a
	// few seconds more is lost.
	read := make(chan struct{})
	go func() {
		readers.Wait()
		close(read)
	}()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
		stopReading()
		<-read
	}
	if err := errors.Join(moveErr, sendErr, ctx.Err()); err != nil {
		return res, err
	}

	res.MoverGot, res.StillGot = len(logs[0].seqs), len(logs[1].seqs)
	res.Gaps = logs[0].gaps + logs[1].gaps
	res.Presence = presence[0] + presence[1]
	res.MoverPause, res.StillPause = longestPause(logs[0].at), longestPause(logs[1].at)
	for _, m := range moves {
		end := m.to.Add(100 * time.Millisecond)
		res.MovePauses = append(res.MovePauses, longestPauseIn(logs[0].at, m.from, end))
		res.StillMovePauses = append(res.StillMovePauses, longestPauseIn(logs[1].at, m.from, end))
	}
	res.Lost, res.Duplicated, res.Misordered = compare(logs[1].seqs, logs[0].seqs)
	sockMu.Lock()
	for _, c := range socks {
		if c.reads.Load() > 0 {
			res.Sockets++
		}
	}
	sockMu.Unlock()
	for len(states) > 0 {
		if st := <-states; st != garou.StateConnecting && st != garou.StateConnected {
			res.Reconnects++
		}
	}
	return res, nil
}

// countingConn counts the packets a socket receives.
type countingConn struct {
	net.PacketConn
	reads atomic.Int64
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.reads.Add(1)
	}
	return n, addr, err
}

// sleepUntil waits until t; it reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// longestPause is the longest time between consecutive times of at.
func longestPause(at []time.Time) time.Duration {
	var p time.Duration
	for i := 1; i < len(at); i++ {
		p = max(p, at[i].Sub(at[i-1]))
	}
	return p
}

// longestPauseIn is the longest time between consecutive times of at
// that overlaps the interval from..to.
func longestPauseIn(at []time.Time, from, to time.Time) time.Duration {
	var p time.Duration
	for i := 1; i < len(at); i++ {
		if at[i].After(from) && at[i-1].Before(to) {
			p = max(p, at[i].Sub(at[i-1]))
		}
	}
	return p
}

// compare counts the texts of want missing from got, those got has more
// than once, and the places where got goes backwards.
func compare(want, got []uint64) (lost, dup, misordered int) {
	seen := make(map[uint64]int, len(got))
	for i, s := range got {
		seen[s]++
		if i > 0 && s < got[i-1] {
			misordered++
		}
	}
	for _, s := range want {
		if seen[s] == 0 {
			lost++
		}
	}
	for _, n := range seen {
		dup += max(n-1, 0)
	}
	return lost, dup, misordered
}
