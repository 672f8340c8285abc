package netem_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/bench/internal/netem"
)

// childEnv makes the test binary run the measurement it names, one of
// children, instead of the tests: it is started inside the emulated
// network.
const childEnv = "GAROU_NETEM_CHILD"

// children are the measurements a child can run; each writes its result
// as JSON.
var children = map[string]func(io.Writer) error{"rooms": roomsChild}

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		run, ok := children[name]
		if !ok {
			fmt.Fprintln(os.Stderr, "no child measurement", name)
			os.Exit(2)
		}
		if err := run(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, name, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// streamPerRoom says whether Garou carries each room on a stream of its
// own, so that a lost packet of one room never delays another's texts
// (protocol garou/4 on): the test then requires the quiet room's latency
// at a member of both rooms to match that at a member of the quiet room
// alone.
const streamPerRoom = true

// Rooms measurement: a busy room carries busyRate texts/s of busySize
// bytes; a quiet room one text every quietEvery. Member "solo" is in the
// quiet room only, member "both" in both rooms, each on a connection of
// its own. Every packet is dropped with probability roomsLoss each way
// and delayed by roomsOneWay each way.
//
// The busy room's rate is well within what the connection's congestion
// control allows at this loss (about 500 KB/s by Mathis's formula at 20 ms
// and 2%): at 400 texts/s of 1000 B the member of both rooms also waits
// for the congestion window the two rooms share, which streams do not
// change (p90 1.5× the member of the quiet room alone, measured), and the
// test would measure that rather than head-of-line blocking. At 100/s one
// stream for all rooms gave the member of both rooms a p90 1.7-1.8× the
// other's; a stream per room, 1.0.
const (
	roomsLoss    = 2.0
	roomsOneWay  = 10 * time.Millisecond
	roomsFor     = 8 * time.Second
	busySenders  = 4
	busyRate     = 100
	busySize     = 1000
	quietEvery   = 20 * time.Millisecond
	quietSize    = 100
	roomsTimeout = 45 * time.Second
)

// roomsResult is what the child measured: the quiet room's delivery
// latencies, in nanoseconds, at each member, in arrival order, and the
// room's sequence numbers of the quiet texts as they arrived.
type roomsResult struct {
	Quiet     int      `json:"quiet"`
	SoloLat   []int64  `json:"solo_lat"`
	BothLat   []int64  `json:"both_lat"`
	SoloOrder []uint64 `json:"solo_order"`
	BothOrder []uint64 `json:"both_order"`
	Busy      int      `json:"busy"`
	BusyAtAll int      `json:"busy_at_both"`
}

// TestRoomIndependenceUnderLoss measures, at 20 ms RTT and 2% loss each
// way, the quiet room's delivery latency at a member of the quiet room
// alone and at a member of both the quiet and a busy room. With every
// room on one stream, a lost packet of the busy room holds up the quiet
// room's texts behind it until it is retransmitted; with a stream per
// room it would not. It requires every text delivered, in order, and
// reports both distributions.
func TestRoomIndependenceUnderLoss(t *testing.T) {
	if err := netem.Available(); err != nil {
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("takes about 15 s")
	}
	ns, err := netem.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := ns.Set(roomsLoss, roomsOneWay); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), roomsTimeout+15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=rooms", "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	var res roomsResult
	decErr := json.NewDecoder(bufio.NewReader(out)).Decode(&res)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if decErr != nil {
		t.Fatalf("child result: %v", decErr)
	}
	dropped, passed, _ := ns.Counters()
	t.Logf("network: %v RTT, %.1f%% loss each way; the rule dropped %d of %d packets", 2*roomsOneWay, roomsLoss, dropped, dropped+passed)

	for _, m := range []struct {
		name  string
		order []uint64
	}{{"solo", res.SoloOrder}, {"both", res.BothOrder}} {
		if len(m.order) != res.Quiet {
			t.Errorf("%s received %d of %d quiet texts", m.name, len(m.order), res.Quiet)
		}
		for i := 1; i < len(m.order); i++ {
			if m.order[i] != m.order[i-1]+1 {
				t.Errorf("%s received quiet text %d after %d", m.name, m.order[i], m.order[i-1])
				break
			}
		}
	}
	if res.BusyAtAll != res.Busy {
		t.Errorf("both received %d of %d busy texts", res.BusyAtAll, res.Busy)
	}
	solo, both := stats(res.SoloLat), stats(res.BothLat)
	t.Logf("quiet room (%d texts, one every %v) while the busy room carries %d texts/s of %d B:", res.Quiet, quietEvery, busyRate, busySize)
	t.Logf("  member of the quiet room only: %s", solo)
	t.Logf("  member of both rooms:          %s", both)
	t.Logf("  both / solo: p50 %.2f, p90 %.2f, p99 %.2f; texts later than %v: %d vs %d",
		both.p50/solo.p50, both.p90/solo.p90, both.p99/solo.p99, lateAfter, both.late, solo.late)
	if streamPerRoom {
		if both.late > solo.late*3/2+res.Quiet/50 {
			t.Errorf("the busy room's losses delay the quiet room: %d quiet texts later than %v at the member of both rooms, %d at the member of the quiet room alone",
				both.late, lateAfter, solo.late)
		}
	} else {
		t.Logf("every room shares one stream today, so the member of both rooms waits for the busy room's retransmissions too")
	}
}

// lateAfter: a text later than this was held up by a retransmission
// (the network's RTT plus its one-way delay and slack).
const lateAfter = 2*roomsOneWay + roomsOneWay + 5*time.Millisecond

type latStats struct {
	p50, p90, p99, max float64 // nanoseconds
	late               int
}

func (s latStats) String() string {
	return fmt.Sprintf("p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms, %d later than %v",
		s.p50/1e6, s.p90/1e6, s.p99/1e6, s.max/1e6, s.late, lateAfter)
}

func stats(lat []int64) latStats {
	if len(lat) == 0 {
		return latStats{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	q := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))]) }
	var st latStats
	st.p50, st.p90, st.p99, st.max = q(0.5), q(0.9), q(0.99), float64(s[len(s)-1])
	for _, v := range s {
		if time.Duration(v) > lateAfter {
			st.late++
		}
	}
	return st
}

// roomsChild runs inside the emulated network: a Garou server, the
// senders and the two members; it writes a roomsResult as JSON to w.
func roomsChild(w io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), roomsTimeout)
	defer cancel()
	srv, err := garou.NewServer(
		garou.WithAddr("127.0.0.1:0"),
		garou.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		garou.WithRateLimit(0, 0),
	)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	srvCtx, stopSrv := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvCtx, pc) }()
	defer func() {
		stopSrv()
		<-served
	}()
	addr := pc.LocalAddr().String()
	dial := func(name string, rooms ...string) (*garou.Client, error) {
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return garou.Dial(dctx, addr, name,
			garou.WithFingerprint(srv.Fingerprint()),
			garou.WithLocalAddr("127.0.0.1:0"),
			garou.WithReconnect(0),
			garou.WithRooms(rooms...))
	}
	var clients []*garou.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	open := func(name string, rooms ...string) (*garou.Client, error) {
		c, err := dial(name, rooms...)
		if err == nil {
			clients = append(clients, c)
		}
		return c, err
	}
	solo, err := open("solo", "quiet")
	if err != nil {
		return err
	}
	both, err := open("both", "quiet", "busy")
	if err != nil {
		return err
	}
	quiet, err := open("quiet-sender", "quiet")
	if err != nil {
		return err
	}
	var busy []*garou.Client
	for i := range busySenders {
		c, err := open("busy-sender-"+strconv.Itoa(i), "busy")
		if err != nil {
			return err
		}
		busy = append(busy, c)
	}

	res := roomsResult{Quiet: int(roomsFor / quietEvery)}
	busyEvery := time.Second * busySenders / busyRate
	perBusy := int(roomsFor / busyEvery)
	res.Busy = perBusy * busySenders

	type member struct {
		c     *garou.Client
		lat   *[]int64
		order *[]uint64
		busy  *int
		want  int
	}
	members := []member{
		{solo, &res.SoloLat, &res.SoloOrder, new(int), res.Quiet},
		{both, &res.BothLat, &res.BothOrder, &res.BusyAtAll, res.Quiet + res.Busy},
	}
	var readers sync.WaitGroup
	drainCtx, stopDrain := context.WithCancel(ctx)
	for _, m := range members {
		readers.Go(func() {
			for got := 0; got < m.want; {
				msg, err := m.c.Receive(ctx)
				if err != nil {
					return
				}
				if msg.Type != garou.TypeText {
					continue
				}
				got++
				now := time.Now().UnixNano()
				if msg.Room == "busy" {
					*m.busy++
					continue
				}
				ts, _, _ := strings.Cut(msg.Text, " ")
				due, _ := strconv.ParseInt(ts, 10, 64)
				*m.lat = append(*m.lat, now-due)
				*m.order = append(*m.order, msg.Seq)
			}
		})
	}

	// The senders are members of their rooms too: they drain what they
	// are sent, or the server would stop reading from them once their
	// receive buffers were full, and so stop acknowledging their texts.
	for _, c := range append([]*garou.Client{quiet}, busy...) {
		readers.Go(func() {
			for {
				if _, err := c.Receive(drainCtx); err != nil {
					return
				}
			}
		})
	}

	start := time.Now().Add(200 * time.Millisecond)
	var senders sync.WaitGroup
	send := func(c *garou.Client, room string, every time.Duration, offset time.Duration, n, size int) {
		senders.Go(func() {
			var inflight sync.WaitGroup
			defer inflight.Wait()
			sem := make(chan struct{}, 64)
			for k := range n {
				due := start.Add(offset + time.Duration(k)*every)
				timer := time.NewTimer(time.Until(due))
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					return
				}
				text := strconv.FormatInt(due.UnixNano(), 10) + " " + strconv.Itoa(k) + " "
				text += strings.Repeat("x", max(size-len(text), 0))
				sem <- struct{}{}
				inflight.Go(func() {
					defer func() { <-sem }()
					if _, err := c.SendTo(ctx, room, text); err != nil && ctx.Err() == nil {
						fmt.Fprintln(os.Stderr, "send:", err)
					}
				})
			}
		})
	}
	send(quiet, "quiet", quietEvery, 0, res.Quiet, quietSize)
	for i, c := range busy {
		send(c, "busy", busyEvery, busyEvery*time.Duration(i)/busySenders, perBusy, busySize)
	}
	senders.Wait()
	stopDrain()
	readers.Wait()
	return json.NewEncoder(w).Encode(res)
}
