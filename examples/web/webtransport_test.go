package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
	"github.com/stretchr/testify/require"
)

// wtConfigOf fetches the page's WebTransport configuration.
func wtConfigOf(t *testing.T, s *serving) wtConfig {
	t.Helper()
	rsp, err := http.Get("http://" + s.HTTP + "/webtransport.json")
	require.NoError(t, err)
	defer rsp.Body.Close()
	require.Equal(t, http.StatusOK, rsp.StatusCode)
	var c wtConfig
	require.NoError(t, json.NewDecoder(rsp.Body).Decode(&c))
	return c
}

// dialWT opens a WebTransport session as a page of origin would, pinning
// the certificate by its hash as browsers do (serverCertificateHashes),
// offering protocols. The session's QUIC connection is closed at the end
// of the test, not with the session: the session's close reaches the
// server before the connection's.
func dialWT(t *testing.T, ctx context.Context, c wtConfig, origin string, protocols ...string) (*http.Response, *webtransport.Session, error) {
	t.Helper()
	return dialWTWith(t, ctx, c, &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true}, origin, protocols...)
}

// dialWTWith is dialWT with the client's QUIC configuration.
func dialWTWith(t *testing.T, ctx context.Context, c wtConfig, qconf *quic.Config, origin string, protocols ...string) (*http.Response, *webtransport.Session, error) {
	t.Helper()
	d := &webtransport.Transport{ApplicationProtocols: protocols}
	u, err := url.Parse(c.URL)
	require.NoError(t, err)
	qc, err := quic.DialAddr(ctx, u.Host, &tls.Config{
		NextProtos:         []string{http3.NextProtoH3},
		InsecureSkipVerify: true, // pinned below instead
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			h := sha256.Sum256(raw[0])
			if hex.EncodeToString(h[:]) != c.SHA256 {
				return errors.New("not the pinned certificate")
			}
			return nil
		},
	}, qconf)
	require.NoError(t, err)
	t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
	cc, err := d.NewClientConn(qc)
	require.NoError(t, err)
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	rsp, sess, err := cc.Dial(ctx, c.URL, hdr)
	if sess != nil {
		t.Cleanup(func() { _ = sess.CloseWithError(0, "") })
	}
	return rsp, sess, err
}

func writeFrame(t *testing.T, w io.Writer, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	_, err = w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
	require.NoError(t, err)
	_, err = w.Write(b)
	require.NoError(t, err)
}

// frame is a server frame, the fields the tests look at.
type frame struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	Seq   uint64 `json:"seq"`
	Text  string `json:"text"`
	Close int    `json:"close"`
	From  *struct {
		Name string `json:"name"`
	} `json:"from"`
}

func readFrame(t *testing.T, r io.Reader) frame {
	t.Helper()
	var hdr [4]byte
	_, err := io.ReadFull(r, hdr[:])
	require.NoError(t, err)
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err = io.ReadFull(r, b)
	require.NoError(t, err)
	var f frame
	require.NoError(t, json.Unmarshal(b, &f))
	return f
}

// TestWebTransport: a client of the WebTransport endpoint, as PROTOCOL.md
// §1.2 maps it (its stream the control stream, each room on a stream the
// server opens, typing as datagrams), and a Go client over QUIC in one room
// see one order; a page of another origin, a session without the protocol
// and a second stream are refused.
func TestWebTransport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := serve(t, &options{http: "127.0.0.1:0", quic: "127.0.0.1:0", webTransport: "127.0.0.1:0"})
	defer s.stop(t)
	c := wtConfigOf(t, s)
	require.Equal(t, "https://"+s.WebTransport+"/garou", c.URL)
	require.Equal(t, garou.ALPN, c.Protocol)

	carol, err := garou.Dial(ctx, s.QUIC, "carol", garou.WithFingerprint(s.Fingerprint))
	require.NoError(t, err)
	defer carol.Close()

	rsp, sess, err := dialWT(t, ctx, c, "http://"+s.HTTP, garou.ALPN)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, rsp.StatusCode)
	require.Equal(t, garou.ALPN, sess.SessionState().ApplicationProtocol)
	ctl, err := sess.OpenStreamSync(ctx)
	require.NoError(t, err)
	writeFrame(t, ctl, map[string]any{"type": "hello", "name": "dave", "rooms": []map[string]any{{"room": "lobby"}}})
	require.Equal(t, "welcome", readFrame(t, ctl).Type)
	lobby, err := sess.AcceptUniStream(ctx)
	require.NoError(t, err)
	require.Equal(t, "joined", readFrame(t, lobby).Type)

	// A second stream of the client's is refused; the session goes on.
	extra, err := sess.OpenStreamSync(ctx)
	require.NoError(t, err)
	_, _ = extra.Write([]byte("x"))
	_, err = extra.Read(make([]byte, 1))
	var serr *webtransport.StreamError
	require.ErrorAs(t, err, &serr)

	// Carol's typing comes as a datagram: one frame, no length prefix.
	require.NoError(t, carol.Typing(ctx, "lobby"))
	dg, err := sess.ReceiveDatagram(ctx)
	require.NoError(t, err)
	var typing frame
	require.NoError(t, json.Unmarshal(dg, &typing))
	require.Equal(t, "typing", typing.Type)
	require.Equal(t, "carol", typing.From.Name)

	// Texts from both sides, in one order for both.
	for i := range 3 {
		writeFrame(t, ctl, map[string]any{"type": "text", "room": "lobby", "text": fmt.Sprintf("dave %d", i), "ref": i + 1})
		_, err := carol.SendTo(ctx, "lobby", fmt.Sprintf("carol %d", i))
		require.NoError(t, err)
	}
	var overWT, overQUIC []string
	for len(overWT) < 6 {
		f := readFrame(t, lobby)
		switch f.Type {
		case "text":
			overWT = append(overWT, fmt.Sprintf("%d:%s:%s", f.Seq, f.From.Name, f.Text))
		case "ack", "presence":
		default:
			t.Fatalf("unexpected %q on the room's stream", f.Type)
		}
	}
	for len(overQUIC) < 6 {
		m, err := carol.Receive(ctx)
		require.NoError(t, err)
		if m.Type == garou.TypeText {
			overQUIC = append(overQUIC, fmt.Sprintf("%d:%s:%s", m.Seq, m.From.Name, m.Text))
		}
	}
	require.Equal(t, overQUIC, overWT)

	// A page's WebTransport.close() is a quit: carol sees dave leave so.
	require.NoError(t, sess.CloseWithError(0, ""))
	for {
		m, err := carol.Receive(ctx)
		require.NoError(t, err)
		if m.Type == garou.TypeLeave && m.User.Name == "dave" {
			require.Equal(t, "quit", m.Reason)
			break
		}
	}

	// A page of localhost may connect to 127.0.0.1; a page of another
	// origin is refused before any session exists.
	_, sess, err = dialWT(t, ctx, c, "http://localhost:8080", garou.ALPN)
	require.NoError(t, err)
	require.NoError(t, sess.CloseWithError(0, ""))
	rsp, _, err = dialWT(t, ctx, c, "http://evil.example", garou.ALPN)
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, rsp.StatusCode)

	// A session that does not negotiate the protocol is closed at once
	// with 0x203 (protocol).
	_, sess, err = dialWT(t, ctx, c, "")
	require.NoError(t, err)
	_, err = sess.AcceptStream(ctx)
	var sessErr *webtransport.SessionError
	require.ErrorAs(t, err, &sessErr)
	require.True(t, sessErr.Remote)
	require.Contains(t, sessErr.Message, garou.ALPN)
	require.Equal(t, webtransport.SessionErrorCode(garou.CloseProtocol), sessErr.ErrorCode)
}

// TestDevCert: the WebTransport certificate is one browsers pin (ECDSA,
// valid at most 14 days), kept in the data directory across restarts, and
// replaced before it expires.
func TestDevCert(t *testing.T) {
	dir := t.TempDir()
	d, err := loadDevCert(dir)
	require.NoError(t, err)
	h1, err := d.sha256()
	require.NoError(t, err)
	leaf := d.leaf
	require.Equal(t, x509.ECDSA, leaf.PublicKeyAlgorithm)
	require.LessOrEqual(t, leaf.NotAfter.Sub(leaf.NotBefore), 14*24*time.Hour)
	require.True(t, time.Now().After(leaf.NotBefore))

	again, err := loadDevCert(dir)
	require.NoError(t, err)
	h2, err := again.sha256()
	require.NoError(t, err)
	require.Equal(t, h1, h2, "a restart keeps the certificate")

	// Eleven days on, it is replaced, and the new one kept.
	again.now = func() time.Time { return time.Now().Add(11 * 24 * time.Hour) }
	h3, err := again.sha256()
	require.NoError(t, err)
	require.NotEqual(t, h1, h3)
	kept, err := os.ReadFile(filepath.Join(dir, certFile))
	require.NoError(t, err)
	require.True(t, bytes.Contains(kept, []byte("CERTIFICATE")))
	der := again.cert.Certificate[0]
	require.Equal(t, h3, sha256.Sum256(der))

	// Without a data directory: a certificate in memory.
	mem, err := loadDevCert("")
	require.NoError(t, err)
	_, err = mem.sha256()
	require.NoError(t, err)
}

// helloWT opens a session of name in room and reads its welcome and the
// room's joined: its control stream and the room's stream.
func helloWT(t *testing.T, ctx context.Context, sess *webtransport.Session, name, room string) (*webtransport.Stream, *webtransport.ReceiveStream) {
	t.Helper()
	ctl, err := sess.OpenStreamSync(ctx)
	require.NoError(t, err)
	writeFrame(t, ctl, map[string]any{"type": "hello", "name": name, "rooms": []map[string]any{{"room": room}}})
	require.Equal(t, "welcome", readFrame(t, ctl).Type)
	str, err := sess.AcceptUniStream(ctx)
	require.NoError(t, err)
	require.Equal(t, "joined", readFrame(t, str).Type)
	return ctl, str
}

// TestWebTransportHostile: a frame over the size limit gets its bye and
// the session's close code; a WebTransport client that stops reading is
// cut as a slow consumer while a QUIC client in its room receives every
// text.
func TestWebTransportHostile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := serve(t, &options{http: "127.0.0.1:0", quic: "127.0.0.1:0", webTransport: "127.0.0.1:0",
		serverOpts: []garou.ServerOption{garou.WithMaxMessageSize(4096), garou.WithSendQueueBytes(256 << 10), garou.WithRateLimit(0, 0)}})
	defer s.stop(t)
	c := wtConfigOf(t, s)

	_, big, err := dialWT(t, ctx, c, "", garou.ALPN)
	require.NoError(t, err)
	ctl, _ := helloWT(t, ctx, big, "big", "r")
	_, err = ctl.Write([]byte{0xff, 0xff, 0xff, 0xff})
	require.NoError(t, err)
	bye := readFrame(t, ctl)
	require.Equal(t, "bye", bye.Type)
	require.Equal(t, int(garou.CloseTooLarge), bye.Close)
	require.NoError(t, big.CloseWithError(0, "")) // as a client does, having read the bye

	// A small receive window: the server's writes wait soon.
	_, slowSess, err := dialWTWith(t, ctx, c, &quic.Config{
		EnableDatagrams: true, EnableStreamResetPartialDelivery: true,
		InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10,
	}, "", garou.ALPN)
	require.NoError(t, err)
	helloWT(t, ctx, slowSess, "slow", "r")
	reader, err := garou.Dial(ctx, s.QUIC, "reader", garou.WithFingerprint(s.Fingerprint), garou.WithRooms("r"))
	require.NoError(t, err)
	defer reader.Close()

	// The slow client reads nothing from here on; the reader reads all.
	text := strings.Repeat("x", 2000)
	got := make(chan error, 1)
	progress := make(chan struct{}, 64)
	left := make(chan string, 1) // why slow left
	const n, window = 1000, 32
	go func() {
		for i := 0; i < n; {
			m, err := reader.Receive(ctx)
			if err != nil {
				got <- err
				return
			}
			switch {
			case m.Type == garou.TypeText:
				i++
				progress <- struct{}{}
			case m.Type == garou.TypeLeave && m.User.Name == "slow":
				left <- m.Reason
			}
		}
		got <- nil
	}()
	for i := range n {
		if i >= window {
			select {
			case <-progress:
			case err := <-got:
				require.NoError(t, err)
			}
		}
		_, err := reader.SendTo(ctx, "r", text)
		require.NoError(t, err)
	}
	require.NoError(t, <-got)
	select {
	case reason := <-left:
		require.Equal(t, "slow", reason)
	default:
		t.Fatal("the slow client was not cut")
	}
	_, err = slowSess.AcceptStream(ctx)
	var sessErr *webtransport.SessionError
	require.ErrorAs(t, err, &sessErr)
	require.Equal(t, webtransport.SessionErrorCode(garou.CloseSlowConsumer), sessErr.ErrorCode)
}
