package natsbroker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Two brokers handed many texts of one room at once publish them in
// atomic batches: the room is numbered densely, each broker's texts in the
// order handed over, and a text retried with the key of one kept before,
// inside a batch, is kept once and answered with the first.
func TestStartPublishBatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []natsbroker.Option
	}{
		{"files", []natsbroker.Option{natsbroker.WithMaxBatch(16)}},
		{"memory", []natsbroker.Option{natsbroker.WithMemoryStorage()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := startNATS(t)
			b1, _ := newBroker(t, ns, tc.opts...)
			b2, nc2 := newBroker(t, ns, tc.opts...)
			text := func(id string) garou.ChatMessage {
				return garou.ChatMessage{Type: garou.TypeText, Room: "r", ID: id, Text: "x", Time: time.Now().UTC()}
			}
			first, err := b1.Publish(ctxT(t), "r", text("k-first"), "ana\x00k1")
			require.NoError(t, err)
			const per = 100
			kept := make([][]garou.ChatMessage, 2)
			var wg sync.WaitGroup
			for i, b := range []*natsbroker.Broker{b1, b2} {
				var waits []func() (garou.ChatMessage, error)
				for k := range per {
					key := ""
					if i == 1 && k == per/2 {
						key = "ana\x00k1" // a retry of the first, on the other server
					}
					waits = append(waits, b.StartPublish(ctxT(t), "r", text(fmt.Sprintf("%d-%d", i, k)), key))
				}
				wg.Go(func() {
					for _, wait := range waits {
						m, err := wait()
						if err != nil {
							t.Error(err)
							return
						}
						kept[i] = append(kept[i], m)
					}
				})
			}
			wg.Wait()
			require.False(t, t.Failed())
			retry := kept[1][per/2]
			require.Equal(t, first.Seq, retry.Seq, "the retry was not answered with the first")
			require.Equal(t, "k-first", retry.ID)
			for i := range kept {
				for k := 1; k < per; k++ {
					if i == 1 && (k == per/2 || k == per/2+1) {
						continue
					}
					require.Less(t, kept[i][k-1].Seq, kept[i][k].Seq, "broker %d: its texts out of the order handed over", i)
				}
			}
			var all []garou.ChatMessage
			for seq := uint64(0); ; {
				msgs, _, err := b2.After(ctxT(t), "r", seq)
				require.NoError(t, err)
				if len(msgs) == 0 {
					break
				}
				all = append(all, msgs...)
				seq = msgs[len(msgs)-1].Seq
			}
			require.Len(t, all, 2*per)
			for i, m := range all {
				require.Equal(t, uint64(i+1), m.Seq)
			}
			js, err := jetstream.New(nc2)
			require.NoError(t, err)
			s, err := js.Stream(ctxT(t), natsbroker.DefaultStream)
			require.NoError(t, err)
			info, err := s.Info(ctxT(t))
			require.NoError(t, err)
			require.Equal(t, uint64(2*per), info.State.Msgs, "the retry was stored")
			batched := 0
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
				raw, err := s.GetMsg(ctxT(t), seq)
				require.NoError(t, err)
				if raw.Header.Get("Nats-Batch-Id") != "" {
					batched++
				}
			}
			require.Greater(t, batched, per, "too few texts were batched")
		})
	}
}
