package garou

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// Transport is one client connection of a transport other than the
// server's own QUIC listener (a WebSocket, a WebTransport session), handed
// to Server.ServeTransport. The server reads the client's frames from the
// control stream and writes its frames to it and to one send stream per
// room, with the limits, hooks, flood control and slow-consumer bound of
// its QUIC connections.
//
// A transport with a single byte stream (a WebSocket) returns, from
// OpenStream, writers onto that stream: every write is one or more whole
// frames, and every server frame a client may receive on a room stream
// names its room, so frames interleaved by frame are still understood.
//
// The server calls AcceptStream once, from one goroutine; it calls the
// other methods from several goroutines at once, but writes to each stream
// from one goroutine at a time.
type Transport interface {
	// Context ends when the connection ends, whichever side ended it.
	Context() context.Context
	// RemoteAddr is the client's address: the per-address connection
	// limit counts by its IP.
	RemoteAddr() net.Addr
	// AcceptStream returns the client's control stream, waiting until
	// ctx ends for the client to open it.
	AcceptStream(ctx context.Context) (Stream, error)
	// OpenStream opens a stream for one room's frames (server to client).
	OpenStream(ctx context.Context) (SendStream, error)
	// CloseWithError ends the connection, telling the client code and
	// text (at most 100 bytes, which the server keeps to). It may be
	// called more than once; calls after the first do nothing.
	CloseWithError(code CloseCode, text string) error
}

// DatagramTransport is a Transport that also carries datagrams (a
// WebTransport session): the server sends it the frames it sends a QUIC
// client as datagrams (typing, PROTOCOL.md §1), each one JSON frame without
// its length prefix, instead of on the room's stream. The server calls
// SendDatagram from several goroutines at once; a datagram it cannot send
// (too large, or the connection is gone) is lost, and its error ignored.
// SendDatagram may wait for room in the transport's queue, but not past
// CloseWithError.
type DatagramTransport interface {
	Transport
	SendDatagram(b []byte) error
}

// SendStream is a stream the server writes frames to. Each Write is one or
// more whole frames. Close ends the stream after what was written; a
// write past the write deadline fails with an error whose Timeout method
// reports true.
type SendStream interface {
	Write(p []byte) (int, error)
	Close() error
	SetWriteDeadline(t time.Time) error
}

// Stream is the control stream: the client's frames in (a byte stream, as
// PROTOCOL.md §2 frames it), the server's control frames out. A read past
// the read deadline fails with an error whose Timeout method reports true,
// and leaves the stream usable for writing: the server stops reading a
// client it is closing while it delivers the client's last frames. Read
// returns io.EOF when the client ends its side.
type Stream interface {
	SendStream
	Read(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// transport is what a connection runs on: a QUIC connection, or a
// Transport with what only QUIC has made to do nothing.
type transport interface {
	Context() context.Context
	RemoteAddr() net.Addr
	acceptControl(ctx context.Context) (controlStream, error)
	openRoom(ctx context.Context) (laneStream, error)
	// HandshakeComplete is closed once the client holds the keys: its
	// 0-RTT data (the hello) cannot be a replay any more.
	HandshakeComplete() <-chan struct{}
	used0RTT() bool
	// datagrams reports whether the client takes datagrams.
	datagrams() bool
	SendDatagram(b []byte) error
	close(s *Server, code CloseCode, text string)
}

// controlStream is the control lane's stream, read by the connection's
// serve goroutine.
type controlStream interface {
	laneStream
	Read(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// quicConn is a connection of the server's QUIC listener.
type quicConn struct{ *quic.Conn }

func (q quicConn) acceptControl(ctx context.Context) (controlStream, error) {
	return q.AcceptStream(ctx)
}

func (q quicConn) openRoom(ctx context.Context) (laneStream, error) {
	return q.OpenUniStreamSync(ctx)
}

func (q quicConn) used0RTT() bool  { return q.ConnectionState().Used0RTT }
func (q quicConn) datagrams() bool { return q.ConnectionState().SupportsDatagrams.Remote }

func (q quicConn) close(s *Server, code CloseCode, text string) { s.closeQUIC(q.Conn, code, text) }

// otherConn is a connection of a Transport: no 0-RTT, and datagrams only
// if it is a DatagramTransport.
type otherConn struct{ t Transport }

// completed is the handshake of a transport that has no 0-RTT.
var completed = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

func (o otherConn) Context() context.Context { return o.t.Context() }
func (o otherConn) RemoteAddr() net.Addr     { return o.t.RemoteAddr() }

func (o otherConn) acceptControl(ctx context.Context) (controlStream, error) {
	str, err := o.t.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return otherStream{str}, nil
}

func (o otherConn) openRoom(ctx context.Context) (laneStream, error) {
	str, err := o.t.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	return otherSendStream{str}, nil
}

func (o otherConn) HandshakeComplete() <-chan struct{} { return completed }
func (o otherConn) used0RTT() bool                     { return false }

func (o otherConn) datagrams() bool {
	_, ok := o.t.(DatagramTransport)
	return ok
}

func (o otherConn) SendDatagram(b []byte) error {
	if d, ok := o.t.(DatagramTransport); ok {
		return d.SendDatagram(b)
	}
	return errNoDatagrams
}

func (o otherConn) close(_ *Server, code CloseCode, text string) { _ = o.t.CloseWithError(code, text) }

var errNoDatagrams = fmt.Errorf("garou: the transport has no datagrams")

// otherSendStream and otherStream give a Transport's streams the
// CancelWrite of QUIC's, which a stream that cannot be reset ignores: the
// connection is closed next anyway.
type otherSendStream struct{ SendStream }

func (otherSendStream) CancelWrite(quic.StreamErrorCode) {}

type otherStream struct{ Stream }

func (otherStream) CancelWrite(quic.StreamErrorCode) {}

// ServeTransport serves one client connection of another transport than
// the server's QUIC listener, as if the listener had accepted it: the same
// protocol (PROTOCOL.md), rooms, hooks and limits, the per-address and
// total connection limits included. It returns once the connection has
// ended and every goroutine serving it has; the connection ends when the
// client or the server ends it, when t's Context ends, or when ctx ends
// (then as when the server shuts down). A connection over a limit is
// closed with its close code at once.
//
// It returns ErrServerClosed, having closed t, once the server is stopping
// (Shutdown, Close, or the end of Serve's context); otherwise nil. A
// server may serve transports with or without serving QUIC too.
func (s *Server) ServeTransport(ctx context.Context, t Transport) error {
	c, err := s.admitConn(otherConn{t})
	if c == nil {
		return err
	}
	defer s.wg.Done()
	s.startPresence()
	stop := context.AfterFunc(ctx, func() {
		c.finish(CloseServerShutdown, "server shutting down", "shutdown")
	})
	defer stop()
	c.serve()
	return nil
}

// admitConn checks the limits for a new connection, under the lock so that
// they hold exactly, and registers it, or refuses it (closing it on a
// goroutine of the server's). The caller runs a connection it gets, whose
// goroutine the server's wait group counts already.
func (s *Server) admitConn(t transport) (*conn, error) {
	addrKey := t.RemoteAddr().String()
	switch a := t.RemoteAddr().(type) {
	case *net.UDPAddr:
		addrKey = a.IP.String()
	case *net.TCPAddr:
		addrKey = a.IP.String()
	}
	s.mu.Lock()
	var code CloseCode
	var reason string
	var err error
	switch {
	case s.isStopped():
		code, reason, err = CloseServerShutdown, "server shutting down", ErrServerClosed
	case len(s.conns) >= s.cfg.maxConns:
		code, reason = CloseServerFull, fmt.Sprintf("server full: %d connections", s.cfg.maxConns)
	case s.perAddr[addrKey] >= s.cfg.maxConnsPerAddr:
		code, reason = CloseTooManyConns, fmt.Sprintf("too many connections from your address (limit %d)", s.cfg.maxConnsPerAddr)
	case s.handshakes >= s.cfg.maxHandshakes:
		code, reason = CloseServerFull, "too many handshakes in progress"
	}
	if reason != "" {
		// A QUIC connection is closed on a goroutine of the server's (its
		// close waits for the handshake); another once the server stops
		// is closed by its caller, whose goroutine is not the server's.
		_, isQUIC := t.(quicConn)
		later := isQUIC || err == nil
		if later {
			s.wg.Go(func() { t.close(s, code, reason) })
		}
		s.mu.Unlock()
		s.logRefusal(s.log, slog.LevelWarn, "garou: connection refused", "remote", t.RemoteAddr().String(), "reason", reason)
		if !later {
			t.close(s, code, reason)
		}
		return nil, err
	}
	c := newConn(s, t, addrKey)
	s.conns[c] = struct{}{}
	s.perAddr[addrKey]++
	s.handshakes++
	s.wg.Add(1)
	s.mu.Unlock()
	return c, nil
}
