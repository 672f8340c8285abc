package garou_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lossyConn drops, duplicates and reorders a few percent of the datagrams
// written through it, from a seeded generator so a failure replays.
type lossyConn struct {
	net.PacketConn
	mu      sync.Mutex
	rng     *rand.Rand
	held    []byte
	heldTo  net.Addr
	dropped int
}

func newLossy(pc net.PacketConn, seed uint64) *lossyConn {
	return &lossyConn{PacketConn: pc, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (l *lossyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	roll := l.rng.Float64()
	switch {
	case roll < 0.03: // drop
		l.dropped++
		return len(p), nil
	case roll < 0.05: // duplicate
		_, _ = l.PacketConn.WriteTo(p, addr)
	case roll < 0.08 && l.held == nil: // reorder: send after the next one
		l.held, l.heldTo = append([]byte(nil), p...), addr
		return len(p), nil
	}
	n, err := l.PacketConn.WriteTo(p, addr)
	if l.held != nil {
		_, _ = l.PacketConn.WriteTo(l.held, l.heldTo)
		l.held = nil
	}
	return n, err
}

func (l *lossyConn) drops() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// TestLossyNetworkDeliversExactlyOnceInOrder serves and dials through
// sockets that drop, duplicate and reorder datagrams: every text still
// reaches every client exactly once, in one order.
func TestLossyNetworkDeliversExactlyOnceInOrder(t *testing.T) {
	const clients, perClient = 5, 30
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	srvConn := newLossy(pc, seed)
	srv, err := garou.NewServer(garou.WithLogger(quiet), garou.WithRateLimit(0, 0))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), srvConn) }()
	defer func() {
		require.NoError(t, srv.Close())
		require.NoError(t, <-errc)
	}()

	var lossy []*lossyConn
	var mu sync.Mutex
	cls := make([]*garou.Client, clients)
	for i := range cls {
		sock := func(ctx context.Context) (net.PacketConn, error) {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			mu.Lock()
			defer mu.Unlock()
			l := newLossy(c, seed+uint64(len(lossy))+1)
			lossy = append(lossy, l)
			return l, nil
		}
		cli, err := garou.Dial(ctxT(t), pc.LocalAddr().String(), fmt.Sprintf("c%d", i),
			garou.WithFingerprint(srv.Fingerprint()), garou.WithPacketConn(sock))
		require.NoError(t, err)
		defer cli.Close()
		cls[i] = cli
	}
	requireOneOrder(t, chatAll(t, cls, perClient))
	mu.Lock()
	dropped := srvConn.drops()
	for _, l := range lossy {
		dropped += l.drops()
	}
	mu.Unlock()
	require.Positive(t, dropped, "the network did drop datagrams")
}

// TestShutdownUnderLoadLosesNothingAccepted: while clients send, Shutdown
// delivers every text a sender was told was accepted to every client,
// tells each why it is closing, and returns within its context.
func TestShutdownUnderLoadLosesNothingAccepted(t *testing.T) {
	const clients = 6
	srv := startServer(t, garou.WithRateLimit(0, 0))
	cls := make([]*garou.Client, clients)
	for i := range cls {
		cls[i] = dial(t, srv, fmt.Sprintf("c%d", i), garou.WithReconnect(0))
	}
	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		wg       sync.WaitGroup
		started  = make(chan struct{}, clients)
	)
	for i, c := range cls {
		wg.Go(func() {
			for k := 0; ; k++ {
				text := fmt.Sprintf("%d:%d", i, k)
				if err := c.Send(context.Background(), text); err != nil {
					return // refused or closed: not accepted
				}
				mu.Lock()
				accepted[text] = true
				mu.Unlock()
				if k == 10 {
					started <- struct{}{}
				}
			}
		})
	}
	received := make([]map[string]bool, clients)
	for i, c := range cls {
		received[i] = map[string]bool{}
		wg.Go(func() {
			for {
				m, err := c.Receive(context.Background())
				if err != nil {
					code, _ := garou.CloseCodeOf(err)
					assert.Equal(t, garou.CloseServerShutdown, code, "%v", err)
					return
				}
				if m.Type == garou.TypeText {
					received[i][m.Text] = true
				}
			}
		})
	}
	for range clients {
		<-started
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, srv.Shutdown(ctx))
	require.Less(t, time.Since(start), 10*time.Second)
	wg.Wait()
	require.NotEmpty(t, accepted)
	for text := range accepted {
		for i := range clients {
			require.True(t, received[i][text], "client %d never got accepted text %q", i, text)
		}
	}
}

// TestWrongCertificateIsRefused: the client verifies the server's
// certificate unless told otherwise.
func TestWrongCertificateIsRefused(t *testing.T) {
	srv := startServer(t)
	other := startServer(t)
	ctx := ctxT(t)
	_, err := garou.Dial(ctx, addrOf(srv), "a") // self-signed, not in the system roots
	require.Error(t, err)
	require.Contains(t, err.Error(), "certificate")

	var cve *tls.CertificateVerificationError
	require.ErrorAs(t, err, &cve)
	require.NotContains(t, err.Error(), "CRYPTO_ERROR", "no QUIC jargon")

	_, err = garou.Dial(ctx, addrOf(srv), "a", garou.WithFingerprint(other.Fingerprint()))
	require.Error(t, err)
	require.ErrorIs(t, err, garou.ErrFingerprintMismatch)
	require.NotContains(t, err.Error(), "CRYPTO_ERROR", "no QUIC jargon")
	require.Equal(t, 1, strings.Count(err.Error(), "garou:"), "one prefix: %v", err)
	require.NotContains(t, err.Error(), srv.Fingerprint(), "the doubted server's fingerprint is not offered for pasting")

	c, err := garou.Dial(ctx, addrOf(srv), "a", garou.WithInsecureSkipVerify())
	require.NoError(t, err)
	c.Close()
	require.True(t, strings.Count(srv.Fingerprint(), ":") == 31)
}
