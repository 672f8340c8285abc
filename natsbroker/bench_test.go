package natsbroker_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// BenchmarkBurst: 12 clients in one room, spread over 1, 2 or 3 servers
// sharing one embedded NATS (or one server alone, without a broker), each
// sending b.N texts four at a time while receiving everyone's. It reports
// deliveries/s (texts received, all clients together) and texts/s.
//
//	go test -run '^$' -bench Burst -benchtime 200x
func BenchmarkBurst(b *testing.B) {
	for _, n := range []int{0, 1, 2, 3} {
		name := fmt.Sprintf("servers=%d", n)
		if n == 0 {
			name = "alone"
		}
		b.Run(name, func(b *testing.B) { benchBurst(b, n) })
	}
}

func benchBurst(b *testing.B, n int) {
	var srvs []*garou.Server
	if n == 0 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(b, err)
		srv, err := garou.NewServer(garou.WithLogger(quiet), garou.WithRateLimit(0, 0), garou.WithPresenceInterval(0))
		require.NoError(b, err)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(context.Background(), pc) }()
		b.Cleanup(func() { srv.Close(); <-done; pc.Close() })
		<-srv.Ready()
		srvs = []*garou.Server{srv}
	} else {
		srvs = nodes(b, startNATS(b), n)
	}
	const clients, window = 12, 4
	var cls []*garou.Client
	for i := range clients {
		srv := srvs[i%len(srvs)]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := garou.Dial(ctx, srv.Addr().String(), fmt.Sprint("c", i), garou.WithFingerprint(srv.Fingerprint()), garou.WithReceiveBuffer(1<<16))
		cancel()
		require.NoError(b, err)
		b.Cleanup(func() { c.Close() })
		cls = append(cls, c)
	}
	per := b.N
	total := clients * per
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range cls {
		for w := range window {
			wg.Go(func() {
				for k := w; k < per; k += window {
					if err := c.Send(ctx, "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for got := 0; got < total; {
				m, err := c.Receive(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if m.Type == garou.TypeText {
					got++
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total*clients)/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(total)/el.Seconds(), "texts/s")
}
