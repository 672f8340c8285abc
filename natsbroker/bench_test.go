package natsbroker_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// The benchmarks: 12 clients in one room, spread over 1, 2 or 3 servers
// sharing one embedded NATS (file storage), or on one server alone without
// a broker. Each text carries the time it was sent; every client measures
// how long each text took to reach it.
//
//	go test -run '^$' -bench . -benchtime 300x
const benchClients = 12

// BenchmarkBurst: each client sends b.N texts, four at a time, while
// receiving everyone's. It reports deliveries/s (texts received, all
// clients together), texts/s, and the p50 and p99 of the delivery time.
func BenchmarkBurst(b *testing.B) {
	for _, n := range []int{0, 1, 2, 3} {
		b.Run(serversName(n), func(b *testing.B) { benchRoom(b, n, 4, 0) })
	}
}

// BenchmarkPaced: each client sends b.N texts, one every 100 ms (120
// texts/s in the room), while receiving everyone's: the delivery time of
// a service that is not overloaded.
func BenchmarkPaced(b *testing.B) {
	for _, n := range []int{0, 1, 2, 3} {
		b.Run(serversName(n), func(b *testing.B) { benchRoom(b, n, 1, 100*time.Millisecond) })
	}
}

// BenchmarkPublish: one broker publishing texts to one room one at a time,
// with nothing else: the bound of one server's texts in one room.
func BenchmarkPublish(b *testing.B) {
	br, _ := newBroker(b, startNATS(b))
	m := garou.ChatMessage{Type: garou.TypeText, Text: strings.Repeat("x", 100), Time: time.Now().UTC()}
	b.ResetTimer()
	for i := range b.N {
		m.ID = strconv.Itoa(i)
		if _, err := br.Publish(context.Background(), "room", m, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "texts/s")
}

func serversName(n int) string {
	if n == 0 {
		return "alone"
	}
	return fmt.Sprintf("servers=%d", n)
}

func benchRoom(b *testing.B, n, window int, every time.Duration) {
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
	var cls []*garou.Client
	for i := range benchClients {
		srv := srvs[i%len(srvs)]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := garou.Dial(ctx, srv.Addr().String(), fmt.Sprint("c", i), garou.WithFingerprint(srv.Fingerprint()), garou.WithReceiveBuffer(1<<16))
		cancel()
		require.NoError(b, err)
		b.Cleanup(func() { c.Close() })
		cls = append(cls, c)
	}
	per := b.N
	total := benchClients * per
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pad := strings.Repeat("x", 80)
	lat := make([][]time.Duration, len(cls))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range cls {
		for w := range window {
			wg.Go(func() {
				var tick <-chan time.Time
				if every > 0 {
					t := time.NewTicker(every)
					defer t.Stop()
					tick = t.C
				}
				for k := w; k < per; k += window {
					if tick != nil {
						<-tick
					}
					text := strconv.FormatInt(time.Now().UnixNano(), 10) + " " + pad
					if err := c.Send(ctx, text); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for len(lat[i]) < total {
				m, err := c.Receive(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if m.Type != garou.TypeText {
					continue
				}
				sent, _ := strconv.ParseInt(m.Text[:strings.IndexByte(m.Text, ' ')], 10, 64)
				lat[i] = append(lat[i], time.Since(time.Unix(0, sent)))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(total*benchClients)/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(total)/el.Seconds(), "texts/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}
