package boltstore_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/boltstore"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The server TestHelperServer runs: its data directory and address. It
// runs only as the child of TestKillRestart.
const (
	serverDirEnv  = "BOLTSTORE_SERVER_DIR"
	serverAddrEnv = "BOLTSTORE_SERVER_ADDR"
)

const (
	killClients   = 8
	killPerClient = 60
	killAfter     = killClients * killPerClient / 3 // acknowledgements before the kill
)

// child is a server process, TestHelperServer.
type child struct {
	cmd    *exec.Cmd
	addr   string
	fp     string
	ready  time.Time // when it said it serves
	stderr *strings.Builder
}

// startChild runs TestHelperServer on addr with dir, and returns once it
// serves.
func startChild(t *testing.T, dir, addr string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), serverDirEnv+"="+dir, serverAddrEnv+"="+addr)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	c := &child{cmd: cmd, stderr: new(strings.Builder)}
	cmd.Stderr = c.stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { c.kill() })
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "serving %s %s", &c.addr, &c.fp); err == nil {
			c.ready = time.Now()
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return c
		}
	}
	c.kill()
	t.Fatalf("the server did not start: %s", c.stderr)
	return nil
}

// kill ends the process with SIGKILL and waits for it to be gone.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		_ = c.cmd.Wait()
	}
}

// killClient is one client of TestKillRestart: what it was acknowledged,
// received and told about its connection.
type killClient struct {
	*garou.Client
	id string // its user ID before the kill

	mu       sync.Mutex
	acked    []string // texts acknowledged, in order
	ackedAt  []time.Time
	resumed  time.Time // its first resume
	lost     []error   // why its connections ended
	received []garou.ChatMessage
	presence []garou.ChatMessage // joins and leaves
}

// TestKillRestart is issue 10's test: a server process with a data
// directory and a bolt store is killed (SIGKILL) in the middle of a burst
// of texts from every client, and started again on the same address and
// directory. Every client is back within a second of the restart (a
// stateless reset tells it its connection is gone), under the same user
// ID; it receives exactly the texts it missed, those acknowledged before
// the kill included, with no gap and nothing twice; each text sent is kept
// once, whether or not its acknowledgement was lost in the kill.
func TestKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	dir := t.TempDir()
	srv := startChild(t, dir, "127.0.0.1:0")

	clients := make([]*killClient, killClients)
	var acks sync.WaitGroup // the first killAfter acknowledgements
	acks.Add(killAfter)
	var nacks int
	var countMu sync.Mutex
	for i := range clients {
		kc := &killClient{}
		// A client learns that its connection is gone from the stateless
		// reset that answers its next packet: with its Send waiting on a
		// silent server, its probe (the default keep-alive, 30 s, plays
		// no part here).
		c, err := garou.Dial(ctxT(t), srv.addr, fmt.Sprintf("c%d", i), garou.WithFingerprint(srv.fp),
			garou.WithReconnectBackoff(5*time.Millisecond, 50*time.Millisecond), garou.WithConnectTimeout(time.Second),
			garou.WithStateHandler(func(sc garou.StateChange) {
				if sc.State == garou.StateReconnecting && sc.Attempt == 1 {
					kc.mu.Lock()
					kc.lost = append(kc.lost, sc.Err)
					kc.mu.Unlock()
				}
				if sc.State == garou.StateResumed {
					kc.mu.Lock()
					if kc.resumed.IsZero() {
						kc.resumed = time.Now()
					}
					kc.mu.Unlock()
				}
			}))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		kc.Client, kc.id = c, c.User().ID
		clients[i] = kc
	}

	var wg sync.WaitGroup
	for i, kc := range clients {
		wg.Go(func() { // the sender
			for k := range killPerClient {
				text := fmt.Sprintf("%d:%d", i, k)
				if !assert.NoError(t, kc.Send(ctxT(t), text), text) {
					return
				}
				kc.mu.Lock()
				kc.acked = append(kc.acked, text)
				kc.ackedAt = append(kc.ackedAt, time.Now())
				kc.mu.Unlock()
				countMu.Lock()
				if nacks++; nacks <= killAfter {
					acks.Done()
				}
				countMu.Unlock()
			}
		})
		wg.Go(func() { // the reader, until it has every text
			texts := 0
			for texts < killClients*killPerClient {
				m, err := kc.Receive(ctxT(t))
				if !assert.NoError(t, err) {
					return
				}
				kc.mu.Lock()
				switch m.Type {
				case garou.TypeText, garou.TypeGap:
					kc.received = append(kc.received, m)
					texts++
				case garou.TypeJoin, garou.TypeLeave:
					kc.presence = append(kc.presence, m)
				}
				kc.mu.Unlock()
			}
		})
	}

	acks.Wait()
	srv.kill()
	killed := time.Now()
	srv = startChild(t, dir, srv.addr)
	wg.Wait()
	srv.kill()
	require.False(t, t.Failed())

	var ackedBefore, ackedAll int
	var back time.Duration
	ackedAfter := make(map[string]bool) // texts acknowledged by the second run
	for i, kc := range clients {
		kc.mu.Lock()
		for j, at := range kc.ackedAt {
			if at.Before(killed) {
				ackedBefore++
			} else {
				ackedAfter[kc.acked[j]] = true
			}
		}
		ackedAll += len(kc.acked)
		require.False(t, kc.resumed.IsZero(), "client %d never resumed", i)
		require.Len(t, kc.lost, 1, "client %d: one connection lost", i)
		var reset *quic.StatelessResetError
		require.ErrorAs(t, kc.lost[0], &reset, "client %d: told by a stateless reset", i)
		back = max(back, kc.resumed.Sub(srv.ready))
		require.Equal(t, kc.id, kc.User().ID, "client %d: the same user", i)

		// Exactly every text, once, numbered without a hole.
		seen := make(map[string]bool)
		for j, m := range kc.received {
			require.Equal(t, garou.TypeText, m.Type, "client %d: %+v", i, m)
			require.Equal(t, uint64(j+1), m.Seq, "client %d: no gap", i)
			require.False(t, seen[m.Text], "client %d: %q twice", i, m.Text)
			seen[m.Text] = true
		}
		for _, other := range clients {
			for _, text := range other.acked {
				require.True(t, seen[text], "client %d never received %q", i, text)
			}
		}
		// No leave (nothing told the server's death), and whoever came
		// back is who was there.
		for _, m := range kc.presence {
			require.Equal(t, garou.TypeJoin, m.Type, "client %d: %s %s (%s)", i, m.User.Name, m.Type, m.Reason)
			require.True(t, slices.ContainsFunc(clients, func(o *killClient) bool { return o.id == m.User.ID }),
				"client %d: %s came back as another user", i, m.User.Name)
		}
		kc.mu.Unlock()
	}

	// The file: every text once.
	store := openAt(t, filepath.Join(dir, "history.db"), boltstore.WithSize(1<<16))
	kept, _, err := store.After(ctxT(t), garou.DefaultRoom, 0)
	require.NoError(t, err)
	require.Len(t, kept, killClients*killPerClient)
	dup := 0
	keptOnce := make(map[string]bool)
	runOf := func(m garou.ChatMessage) string { return m.ID[:strings.IndexByte(m.ID, '-')] }
	firstRun, recalled := runOf(kept[0]), 0
	for _, m := range kept {
		if keptOnce[m.Text] {
			dup++
		}
		keptOnce[m.Text] = true
		if runOf(m) == firstRun && ackedAfter[m.Text] {
			recalled++ // kept by the killed run, acknowledged by the next
		}
	}
	require.Zero(t, dup)

	t.Logf("acknowledged before the kill: %d; kept by the killed run, acknowledged after it (retried): %d; "+
		"acknowledged in all: %d; kept: %d; duplicates: %d; gaps: 0; every client back %v after the restart "+
		"(kill to ready: %v)", ackedBefore, recalled, ackedAll, len(kept), dup, back.Round(time.Millisecond),
		srv.ready.Sub(killed).Round(time.Millisecond))
	require.Less(t, back, time.Second, "every client back within a second of the restart")
}

// TestHelperServer is the server process TestKillRestart kills: a
// garou.Server with a data directory and a bolt store in it, on the
// address given (port 0 the first time). It says "serving ADDR
// FINGERPRINT" once it serves, and serves until killed.
func TestHelperServer(t *testing.T) {
	dir := os.Getenv(serverDirEnv)
	if dir == "" {
		t.Skip("run by TestKillRestart")
	}
	store, err := boltstore.Open(filepath.Join(dir, "history.db"), boltstore.WithSize(1<<16))
	require.NoError(t, err)
	srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithDataDir(dir),
		garou.WithRateLimit(0, 0), garou.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", os.Getenv(serverAddrEnv))
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	<-srv.Ready()
	fmt.Printf("serving %s %s\n", pc.LocalAddr(), srv.Fingerprint())
	t.Fatalf("served until: %v", <-served) // never: it is killed
}
