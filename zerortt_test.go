//go:build !race

package garou_test

// The 0-RTT tests run without the race detector: quic-go v0.65 has a data
// race between opening a stream during 0-RTT and the handshake's transport
// parameters (quic-go issue #4303), which the detector reports in the
// client. .ci/run runs them on their own without -race.

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// TestReconnectHelloIn0RTT: a client that reconnects resumes its TLS
// session and says its hello in 0-RTT; the server welcomes it once the
// handshake completes.
func TestReconnectHelloIn0RTT(t *testing.T) {
	lines := make(lineWriter, 100)
	srv := startServer(t, garou.WithLogger(slog.New(slog.NewTextHandler(lines, nil))))
	sock := &cuttable{}
	alice := dial(t, srv, "alice", garou.WithPacketConn(sock.listen), garou.WithZeroRTT())
	welcomed := func() string {
		for {
			if l := <-lines; strings.Contains(l, "garou: welcomed") {
				return l
			}
		}
	}
	require.Contains(t, welcomed(), "resumed=false early=false")
	sock.cut(false)
	require.Contains(t, welcomed(), "resumed=true early=true")
	require.NoError(t, alice.Send(ctxT(t), "still here"))
}

// TestRejected0RTTFallsBack: a server back with the same certificate but
// new session ticket keys cannot read the client's ticket and refuses its
// 0-RTT hello; the client says it again once the handshake completes.
func TestRejected0RTTFallsBack(t *testing.T) {
	conf, fp := devCert(t)
	lines := make(lineWriter, 100)
	log := garou.WithLogger(slog.New(slog.NewTextHandler(lines, nil)))
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start(garou.WithTLSConfig(conf.Clone()), log)
	states := make(chan garou.StateChange, 64)
	c, err := garou.Dial(ctxT(t), r.addr, "zero", garou.WithFingerprint(fp), garou.WithZeroRTT(),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	require.NoError(t, err)
	defer c.Close()
	r.shutdown()
	r.start(garou.WithTLSConfig(&tls.Config{Certificates: conf.Certificates}), log) // new ticket keys
	for sc := range states {
		require.NotEqual(t, garou.StateClosed, sc.State, "%v", sc.Err)
		if sc.State == garou.StateResumed {
			break
		}
	}
	var welcomes []string
	for len(welcomes) < 2 {
		if l := <-lines; strings.Contains(l, "garou: welcomed") {
			welcomes = append(welcomes, l)
		}
	}
	require.Contains(t, welcomes[1], "early=false", "the 0-RTT hello was refused, the 1-RTT one welcomed")
	require.NoError(t, c.Send(ctxT(t), "back"))
}

// TestEarlyReplayIn0RTT: a client that reconnects in 0-RTT gets the texts it
// missed in the rooms its session is in before its handshake completes
// (the server's early replay), then the rest after the welcome: each text
// exactly once, in order, in both rooms. On loopback the handshake may
// complete before the server reads the hello, and the replay is then the
// join's alone: the reconnect is repeated until one took the early path,
// each checked the same way.
func TestEarlyReplayIn0RTT(t *testing.T) {
	srv := startServer(t)
	sock := &cuttable{}
	alice := dial(t, srv, "alice", garou.WithPacketConn(sock.listen), garou.WithZeroRTT(),
		garou.WithRooms("one", "two"), garou.WithReconnectBackoff(time.Millisecond, time.Millisecond))
	bob := dial(t, srv, "bob", garou.WithRooms("one", "two"))
	const missed = 5
	for round := 0; srv.Stats().EarlyReplays == 0; round++ {
		require.Less(t, round, 20, "no reconnect took the early path")
		sock.cut(true) // alice's socket is gone; the server still holds her connection
		for i := range missed {
			for _, room := range []string{"one", "two"} {
				_, err := bob.SendTo(ctxT(t), room, fmt.Sprintf("%s %d.%d", room, round, i))
				require.NoError(t, err)
			}
		}
		sock.release()
		got := map[string][]string{}
		for len(got["one"])+len(got["two"]) < 2*missed {
			m, err := alice.Receive(ctxT(t))
			require.NoError(t, err)
			if m.Type == garou.TypeText {
				got[m.Room] = append(got[m.Room], m.Text)
			}
		}
		for _, room := range []string{"one", "two"} {
			want := make([]string, missed)
			for i := range want {
				want[i] = fmt.Sprintf("%s %d.%d", room, round, i)
			}
			require.Equal(t, want, got[room])
		}
	}
	// Nothing more: a text said now is the next one.
	_, err := bob.SendTo(ctxT(t), "one", "after")
	require.NoError(t, err)
	for {
		m, err := alice.Receive(ctxT(t))
		require.NoError(t, err)
		if m.Type == garou.TypeText {
			require.Equal(t, "after", m.Text)
			break
		}
	}
}
