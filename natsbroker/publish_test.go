package natsbroker_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Two brokers handed many texts of one room at once, from several senders,
// publish them without waiting for each other's: the room is numbered
// densely, each sender's texts in the order handed over, and a text retried with the key of one
// kept before, among them, is kept once and answered with the first, its
// slot voided (told to clients as a gap of one).
func TestStartPublishPipelined(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []natsbroker.Option
	}{
		{"files", nil},
		{"memory", []natsbroker.Option{natsbroker.WithMemoryStorage()}},
		{"window 1", []natsbroker.Option{natsbroker.WithWindow(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := startNATS(t)
			b1, _ := newBroker(t, ns, tc.opts...)
			b2, nc2 := newBroker(t, ns, tc.opts...)
			const senders = 6
			text := func(i, k int) garou.ChatMessage {
				return garou.ChatMessage{Type: garou.TypeText, Room: "r", ID: fmt.Sprintf("%d-%d", i, k), Text: "x",
					Time: time.Now().UTC(), From: &garou.User{ID: fmt.Sprintf("u%d-%d", i, k%senders)}}
			}
			m := text(0, -1)
			m.ID = "k-first"
			first, err := b1.Publish(ctxT(t), "r", m, "ana\x00k1")
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
					waits = append(waits, b.StartPublish(ctxT(t), "r", text(i, k), key))
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
				for k := senders; k < per; k++ {
					if i == 1 && (k == per/2 || k == per/2+senders) {
						continue // the retry, answered with the first
					}
					require.Less(t, kept[i][k-senders].Seq, kept[i][k].Seq, "broker %d: a sender's texts out of the order handed over", i)
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
			skipped := 0
			for i := 1; i < len(all); i++ {
				require.Less(t, all[i-1].Seq, all[i].Seq)
				skipped += int(all[i].Seq - all[i-1].Seq - 1)
			}
			require.Equal(t, uint64(1), all[0].Seq)
			require.LessOrEqual(t, skipped, 1, "more numbers void than the retry's")
			js, err := jetstream.New(nc2)
			require.NoError(t, err)
			s, err := js.Stream(ctxT(t), natsbroker.DefaultStream)
			require.NoError(t, err)
			info, err := s.Info(ctxT(t))
			require.NoError(t, err)
			require.Equal(t, uint64(2*per+skipped), info.State.Msgs, "the retry was stored")
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
				raw, err := s.GetMsg(ctxT(t), seq)
				require.NoError(t, err)
				require.Equal(t, raw.Header.Get("Garou-Seq"), raw.Subject[strings.LastIndexByte(raw.Subject, '.')+1:], "a text out of its slot")
			}
		})
	}
}

// A slot left empty behind a kept text by a server that stopped (here, a
// text stored at slot 3 with slot 2 never written) is voided by a reader
// once it has been empty for longer than a publish can take: the members
// get the text after it, the number without a text skipped, nothing told
// as missed.
func TestEmptySlotVoidedByReader(t *testing.T) {
	ns := startNATS(t)
	b, nc := newBroker(t, ns, natsbroker.WithPublishTimeout(50*time.Millisecond))
	srv := serve(t, b)[0]
	ana := dial(t, srv, "ana")
	require.NoError(t, ana.Send(ctxT(t), "one"))
	require.Equal(t, uint64(1), nextText(t, ana).Seq)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	msg := nats.NewMsg("garou.room.bG9iYnk.3") // lobby, slot 3
	msg.Header.Set("Garou-Seq", "3")
	msg.Data = []byte(`{"id":"x-3","from":{"id":"z","name":"zoe"},"text":"three","time":"2026-11-28T10:00:00Z"}`)
	_, err = js.PublishMsg(ctxT(t), msg, jetstream.WithExpectLastSequencePerSubject(0))
	require.NoError(t, err)

	m := nextText(t, ana)
	require.Equal(t, "three", m.Text)
	require.Equal(t, uint64(3), m.Seq)
	s, err := js.Stream(ctxT(t), natsbroker.DefaultStream)
	require.NoError(t, err)
	void, err := s.GetLastMsgForSubject(ctxT(t), "garou.room.bG9iYnk.2")
	require.NoError(t, err, "slot 2 was not voided")
	require.Equal(t, "1", void.Header.Get("Garou-Void"))
	require.Empty(t, void.Data)

	// The next text goes after them.
	require.NoError(t, ana.Send(ctxT(t), "four"))
	m = nextText(t, ana)
	require.Equal(t, "four", m.Text)
	require.Equal(t, uint64(4), m.Seq)
}
