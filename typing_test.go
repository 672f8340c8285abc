package garou_test

import (
	"encoding/json"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// TestTyping: a typing signal reaches the room's other members, stamped
// with the sender, unsequenced; the client and the server each hold back
// repeats.
func TestTyping(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(0))
	alice := dial(t, srv, "alice")
	bob := dial(t, srv, "bob")
	next(t, alice, garou.TypeJoin)

	require.NoError(t, alice.Typing(ctxT(t), ""))
	require.NoError(t, alice.Typing(ctxT(t), "")) // held back by the client
	require.NoError(t, alice.Send(ctxT(t), "hi"))
	// The signal comes as a datagram, the text on the stream: in either
	// order.
	var typing []garou.ChatMessage
	for text := false; !text || len(typing) == 0; {
		m := next(t, bob, garou.TypeTyping, garou.TypeText)
		if m.Type == garou.TypeText {
			require.Equal(t, "hi", m.Text)
			text = true
			continue
		}
		typing = append(typing, m)
	}
	require.Len(t, typing, 1)
	m := typing[0]
	require.Equal(t, garou.DefaultRoom, m.Room)
	require.Equal(t, "alice", m.From.Name)
	require.Equal(t, alice.User().ID, m.From.ID)
	require.Zero(t, m.Seq)
	require.Equal(t, "hi", next(t, alice, garou.TypeTyping, garou.TypeText).Text, "not to the typist")

	var e *garou.Error
	require.ErrorAs(t, alice.Typing(ctxT(t), "elsewhere"), &e)
	require.Equal(t, garou.CodeNotInRoom, e.Code)
}

// TestTypingHeldBackByTheServer: a client that sends typing signals
// without pause gets one through per quarter of TypingTimeout, and is
// answered when it asks (ref); in a room over the presence limit nobody
// is told.
func TestTypingHeldBackByTheServer(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(0), garou.WithRateLimit(0, 0))
	watcher := dial(t, srv, "watcher")
	m := rawDial(t, srv)
	m.hello("mallory")
	for ref := range 20 {
		m.sendJSON(map[string]any{"type": "typing", "ref": ref + 1})
		require.Equal(t, uint64(ref+1), m.expect("ack").num("ref"))
	}
	m.sendJSON(map[string]any{"type": "text", "ref": 99, "text": "done"})
	m.expect("ack")
	require.Equal(t, garou.TypeTyping, next(t, watcher, garou.TypeTyping, garou.TypeText).Type)
	require.Equal(t, "done", next(t, watcher, garou.TypeTyping, garou.TypeText).Text, "one signal of twenty")
	m.sendJSON(map[string]any{"type": "typing", "room": "nowhere", "ref": 100})
	m.expectError(garou.CodeNotInRoom, 100)

	big := startServer(t, garou.WithPresenceLimit(1), garou.WithPresenceInterval(0))
	w := dial(t, big, "watcher")
	typist := dial(t, big, "typist")
	require.NoError(t, typist.Typing(ctxT(t), ""))
	require.NoError(t, typist.Send(ctxT(t), "anyone?"))
	require.Equal(t, "anyone?", next(t, w, garou.TypeTyping, garou.TypeText).Text, "no typing in a large room")
}

// TestTypingAsDatagram: to a client that takes QUIC datagrams, a typing
// signal comes as one (the JSON frame without its length prefix), not on
// the stream.
func TestTypingAsDatagram(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(0))
	r := rawDialConf(t, srv, &quic.Config{EnableDatagrams: true})
	r.hello("watcher")
	alice := dial(t, srv, "alice")
	require.NoError(t, alice.Typing(ctxT(t), ""))
	b, err := r.qc.ReceiveDatagram(ctxT(t))
	require.NoError(t, err)
	var f map[string]any
	require.NoError(t, json.Unmarshal(b, &f))
	require.Equal(t, "typing", f["type"])
	require.Equal(t, "lobby", f["room"])
	require.Equal(t, "alice", f["from"].(map[string]any)["name"])
	require.NoError(t, alice.Send(ctxT(t), "after"))
	require.Equal(t, "after", r.expect("text").str("text"), "nothing but room traffic on the stream")
}
