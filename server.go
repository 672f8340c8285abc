package garou

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// lingerTimeout bounds how long a connection closed gracefully (refusal,
// kick, shutdown) waits for the client to read its last frame and close.
const lingerTimeout = 5 * time.Second

// Server is a Garou chat server. Build it with NewServer and run it with
// ListenAndServe or Serve; stop it by ending their context or with
// Shutdown (both graceful) or Close (immediate). All methods are safe for
// concurrent use.
//
// A Server serves one socket: Serve and ListenAndServe may be called once.
// Ready tells when it accepts connections, and Addr is then its address.
// It may also serve connections of other transports, with or without the
// socket (ServeTransport; the WebSockets of wsgarou).
//
// Each connection has one goroutine of the server's, which reads the
// client's frames and runs the hooks about that user; while there is
// something to send it, a second one writes, and ends as soon as its queue
// is empty. An idle connection thus has one goroutine of Garou's, parked in
// a read, and two of quic-go's (its run loop and its send queue). Close,
// Shutdown and the end of Serve's context wait for all of them.
type Server struct {
	cfg   serverConfig
	tls   *tls.Config
	fp    string
	log   *slog.Logger
	quic  *quic.Config
	idPfx string // of message IDs: this run's
	// run identifies the server's numbering to clients (welcome's
	// "server"): its history store's epoch, or this run's; with a broker,
	// the broker's Epoch at the start (see epoch).
	run  string
	data *dataDir
	// tokens signs session tokens that outlive their connections (with a
	// data directory); nil: tokens are random and die with the session.
	tokens *sessionSigner
	ids    atomic.Uint64

	// draining is set by Shutdown: no new text is sequenced after it.
	draining atomic.Bool
	closedCh chan struct{} // closed by Close: stop lingering, stop everything
	// runCtx ends with Close: it bounds what the server's own goroutines
	// ask of the history store.
	runCtx    context.Context
	cancelRun context.CancelFunc
	stopCh    chan struct{} // closed by Shutdown or Close: stop accepting
	closing   sync.Once
	stopping  sync.Once
	ready     chan struct{} // closed once serving, or once it never will
	readied   sync.Once
	wg        sync.WaitGroup // every goroutine the server owns
	fills     sync.WaitGroup // reads of what a room missed (broker.go)

	attachMu sync.Mutex
	attached map[*conn]func() // users reachable through a UserBroker
	held     map[*conn]func() // names held through a NameHolder
	listed   map[*conn]func() // users listed through a UserLister

	mu         sync.Mutex
	served     bool
	addr       net.Addr
	serveDone  chan struct{}
	conns      map[*conn]struct{}
	perAddr    map[string]int
	handshakes int
	names      map[string]*conn // nameKey → welcomed connection
	byID       map[string]*conn // user ID → welcomed connection
	sessions   map[string]*conn

	roomsMu  sync.Mutex
	rooms    map[string]*room
	seqFloor uint64 // highest seq of any removed room: new rooms start above it

	stats       counters
	refusalLogs logLimiter

	// Rooms with presence changes to tell, and the presence loop's wake-up.
	presMu    sync.Mutex
	presRooms []*room
	presKick  chan struct{}
	// presenceOnce starts the presence loop.
	presenceOnce sync.Once
}

// NewServer builds a server from options, validating them.
func NewServer(opts ...ServerOption) (*Server, error) {
	cfg := defaultServerConfig()
	for _, o := range opts {
		if o != nil {
			o.applyServer(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var dd *dataDir
	tlsIn := cfg.tlsConfig
	if cfg.dataDir != "" {
		var err error
		if dd, err = openDataDir(cfg.dataDir, tlsIn == nil); err != nil {
			return nil, err
		}
		if dd.cert != nil {
			tlsIn = &tls.Config{Certificates: []tls.Certificate{*dd.cert}}
		}
	}
	tlsConf, fp, err := serverTLS(tlsIn)
	if err != nil {
		return nil, err
	}
	var pfx [4]byte
	_, _ = rand.Read(pfx[:])
	run := hex.EncodeToString(pfx[:]) + "-"
	if k, ok := cfg.history.(SeqKeeper); ok {
		// Numbers are the store's: clients resume by them as long as it
		// keeps its history, across restarts too.
		run = k.Epoch()
	}
	if cfg.broker != nil {
		run = cfg.broker.Epoch() // the same on every server of the service
	}
	if dd != nil {
		// Tickets of an earlier run stay valid: clients resume TLS, and
		// 0-RTT, across a restart.
		tlsConf.SetSessionTicketKeys([][32]byte{dd.ticketKey})
	}
	s := &Server{
		cfg:   cfg,
		tls:   tlsConf,
		fp:    fp,
		log:   cfg.logger,
		idPfx: hex.EncodeToString(pfx[:]) + "-",
		run:   run,
		data:  dd,
		quic: &quic.Config{
			HandshakeIdleTimeout: min(cfg.handshakeTimeout, 10*time.Second),
			// A reconnecting client's hello may come in 0-RTT; it is acted
			// on only once the handshake completes (conn.run), so a
			// replayed one does nothing.
			Allow0RTT:      true,
			MaxIdleTimeout: cfg.idleTimeout,
			// One bidirectional stream per connection and nothing else:
			// further streams are a protocol error at the QUIC layer.
			MaxIncomingStreams:    1,
			MaxIncomingUniStreams: -1,
			// Flow-control windows cost nothing while nothing is in
			// flight (quic-go buffers a frame only once it arrives), but
			// they bound what a client can make the server hold while its
			// reader is busy (in a hook, or waiting for its room): one
			// largest frame, since the reader consumes as data arrives.
			// Clients send small texts: the windows start at 32 KiB and
			// grow only for a client that sends much. One stream carries
			// everything, so the connection's window is the stream's.
			InitialStreamReceiveWindow:     initialWindow,
			MaxStreamReceiveWindow:         maxWindow(cfg.maxMessageSize),
			InitialConnectionReceiveWindow: initialWindow,
			MaxConnectionReceiveWindow:     maxWindow(cfg.maxMessageSize),
		},
		closedCh: make(chan struct{}),
		stopCh:   make(chan struct{}),
		ready:    make(chan struct{}),
		conns:    make(map[*conn]struct{}),
		perAddr:  make(map[string]int),
		names:    make(map[string]*conn),
		byID:     make(map[string]*conn),
		sessions: make(map[string]*conn),
		rooms:    make(map[string]*room),
		presKick: make(chan struct{}, 1),
	}
	if dd != nil {
		s.tokens = &sessionSigner{key: dd.sessionKey}
	}
	s.runCtx, s.cancelRun = context.WithCancel(context.Background())
	return s, nil
}

// initialWindow is the flow-control window a client starts with: its
// hello and a few texts.
const initialWindow = 32 << 10

// maxWindow is the flow-control window a client's stream and connection
// may grow to: one frame of the largest size, with its header.
func maxWindow(maxMessageSize int) uint64 {
	return max(uint64(maxMessageSize+frameHeaderLen), initialWindow)
}

// Fingerprint returns the SHA-256 fingerprint of the server's certificate,
// for clients to pin with WithFingerprint, or "" when the TLS config picks
// certificates dynamically.
func (s *Server) Fingerprint() string { return s.fp }

// Addr returns the address the server listens on (or listened on, once
// stopped), or nil if it never served. It is set as Serve starts, so at
// the latest when Ready is closed; with ListenAndServe and a port of 0, it
// has the port picked.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Ready returns a channel closed once the server accepts connections, when
// Addr is its address; it is also closed when the server stops without
// having served (ListenAndServe could not bind, or Close came first), and
// Addr is then nil. A program that runs ListenAndServe on its own
// goroutine waits on it to learn the address:
//
//	go func() { errc <- srv.ListenAndServe(ctx) }()
//	<-srv.Ready()
//	if srv.Addr() == nil { return <-errc }
func (s *Server) Ready() <-chan struct{} { return s.ready }

func (s *Server) setReady() { s.readied.Do(func() { close(s.ready) }) }

// ListenAndServe binds the configured UDP address (WithAddr) and serves on
// it as Serve does, until ctx ends, Shutdown or Close. Ready and Addr tell
// the address once bound.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", s.cfg.addr)
	if err != nil {
		s.setReady()
		return fmt.Errorf("garou: listen on %s: %w", s.cfg.addr, err)
	}
	defer pc.Close()
	return s.Serve(ctx, pc)
}

// Serve serves on pc, which the caller keeps owning (Serve does not close
// it), until ctx ends, Shutdown or Close; then it returns nil, once every
// connection is gone. Addr is pc's address from the start of Serve on.
//
// Ending ctx shuts the server down gracefully, as Shutdown does: no new
// connection or text is accepted, every text already accepted is
// delivered, and every client is told the server is shutting down
// (CloseServerShutdown). The clients still connected after the shutdown
// timeout (WithShutdownTimeout, default 5s) are disconnected at once.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	s.mu.Lock()
	switch {
	case s.isStopped():
		s.mu.Unlock()
		return ErrServerClosed
	case s.served:
		s.mu.Unlock()
		return errors.New("garou: Serve called twice")
	}
	s.served = true
	s.addr = pc.LocalAddr()
	s.serveDone = make(chan struct{})
	s.mu.Unlock()
	defer close(s.serveDone)
	defer s.setReady()

	tr := &quic.Transport{Conn: pc}
	if s.data != nil {
		// Clients of a run that crashed learn at once, from a stateless
		// reset, that their connection is gone.
		key := quic.StatelessResetKey(s.data.resetKey)
		tr.StatelessResetKey = &key
	}
	ln, err := tr.ListenEarly(s.tls, s.quic)
	if err != nil {
		tr.Close()
		s.mu.Lock()
		s.addr = nil
		s.mu.Unlock()
		return fmt.Errorf("garou: listen: %w", err)
	}
	// The fingerprint is the host's to show (Fingerprint), with the way
	// its clients connect: logged here too, it would be shown twice.
	s.log.Info("garou: serving", "addr", ln.Addr().String())
	s.setReady()

	s.startPresence()
	actx, cancel := context.WithCancel(ctx)
	s.wg.Go(func() {
		select {
		case <-actx.Done():
		case <-s.stopCh:
		}
		cancel()
	})
	for {
		qc, err := ln.Accept(actx)
		if err != nil {
			break
		}
		s.admit(qc)
	}
	cancel()
	if ctx.Err() != nil {
		s.drainOnCtx()
	}
	// Shutdown or Close end the connections; wait for them, then close the
	// listener and the transport, in that order, so nothing is left running.
	s.wg.Wait()
	s.stopRooms()
	ln.Close()
	tr.Close()
	return nil
}

// drainOnCtx is the graceful shutdown that ending Serve's context starts,
// bounded by the shutdown timeout. Called by Serve once it accepts no more.
func (s *Server) drainOnCtx() {
	s.log.Info("garou: shutting down", "timeout", s.cfg.shutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.shutdownTimeout)
	defer cancel()
	s.beginShutdown(ctx)
	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		s.log.Warn("garou: shutdown timed out; closing the remaining connections", "timeout", s.cfg.shutdownTimeout)
		s.closeConns()
		<-drained
	}
}

func (s *Server) isStopped() bool {
	select {
	case <-s.stopCh:
		return true
	default:
		return false
	}
}

// admit starts a connection the listener accepted, or refuses it.
func (s *Server) admit(qc *quic.Conn) {
	if c, _ := s.admitConn(quicConn{qc}); c != nil {
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// closeQUIC closes qc with code. Connections are accepted before their
// handshake completes (0-RTT), and a close sent before then reaches the
// client as a bare APPLICATION_ERROR without the code (RFC 9000 §10.2.3):
// so it waits for the handshake to end, which QUIC's handshake timeout
// bounds, unless the server is closing.
func (s *Server) closeQUIC(qc *quic.Conn, code CloseCode, text string) {
	select {
	case <-qc.HandshakeComplete():
	case <-qc.Context().Done():
	case <-s.closedCh:
	}
	_ = qc.CloseWithError(quic.ApplicationErrorCode(code), text)
}

// queuePresence puts r on the list of rooms whose presence changes the
// presence loop tells at its next turn. Called with r.mu held.
func (s *Server) queuePresence(r *room) {
	s.presMu.Lock()
	s.presRooms = append(s.presRooms, r)
	s.presMu.Unlock()
	signal(s.presKick)
}

// startPresence starts the presence loop, once, for the first connection
// or listener.
func (s *Server) startPresence() {
	if s.cfg.presenceInterval > 0 {
		s.presenceOnce.Do(func() { s.wg.Go(s.presenceLoop) })
	}
}

// presenceLoop tells the presence changes of every room that has some, one
// interval after the first of them: at most one presence frame per room
// per interval, whatever the number of joins and leaves. It sleeps while
// no room has any, and ends when the server stops.
func (s *Server) presenceLoop() {
	t := time.NewTimer(s.cfg.presenceInterval)
	t.Stop()
	for {
		select {
		case <-s.presKick:
		case <-s.stopCh:
			return
		}
		t.Reset(s.cfg.presenceInterval)
		select {
		case <-t.C:
		case <-s.stopCh:
			t.Stop()
			return
		}
		s.presMu.Lock()
		rooms := s.presRooms
		s.presRooms = nil
		s.presMu.Unlock()
		var later []*room
		now := time.Now()
		for _, r := range rooms {
			r.mu.Lock()
			if r.presenceDueLocked(now) {
				r.queued = false
				r.flushPresenceLocked(nil)
			} else {
				later = append(later, r) // a large room: its count waits
			}
			r.mu.Unlock()
		}
		if later != nil {
			s.presMu.Lock()
			s.presRooms = append(s.presRooms, later...)
			s.presMu.Unlock()
			signal(s.presKick)
		}
	}
}

// userPage returns the users online after cursor (a user ID; "" for the
// first) in the order of their IDs, at most PageSize of them, with the
// cursor of the next page ("" if none) and the number online. It keeps
// only the best PageSize candidates as it scans, so a page costs one pass
// over the users and no copy of them.
func (s *Server) userPage(cursor string) (page []User, next string, total int) {
	if s.userLister() != nil {
		all := s.allUsers()
		slices.SortFunc(all, func(a, b User) int { return strings.Compare(a.ID, b.ID) })
		page, next = pageOf(all, cursor)
		return page, next, len(all)
	}
	best := make([]*conn, 0, PageSize+1)
	after := 0
	s.mu.Lock()
	total = len(s.byID)
	for id, c := range s.byID {
		if id <= cursor {
			continue
		}
		after++
		if len(best) == PageSize && id >= best[PageSize-1].user.ID {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, id, byID)
		best = slices.Insert(best, i, c)
		if len(best) > PageSize {
			best = best[:PageSize]
		}
	}
	page = make([]User, len(best))
	for i, c := range best {
		page[i] = c.user
	}
	s.mu.Unlock()
	if after > len(best) {
		next = page[len(page)-1].ID
	}
	return page, next, total
}

// online returns the number of users online.
func (s *Server) online() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

// Users returns the users online now, in the order they connected. With
// a Broker that is a UserLister, they are the users of every server of
// the service (those of other servers as last heard of); otherwise this
// server's.
func (s *Server) Users() []User {
	users := s.allUsers()
	sortUsers(users)
	return users
}

// allUsers returns the users online on this server, and on the others if
// the broker lists them (a user of this server listed there too, its
// session moving, counts once).
func (s *Server) allUsers() []User {
	s.mu.Lock()
	users := make([]User, 0, len(s.names))
	for _, c := range s.names {
		users = append(users, c.user)
	}
	s.mu.Unlock()
	return s.withRemoteUsers(users)
}

// epoch identifies the server's numbering to clients now: the broker's
// Epoch, which may change while the server runs, or run.
func (s *Server) epoch() string {
	if s.cfg.broker != nil {
		return s.cfg.broker.Epoch()
	}
	return s.run
}

func sortUsers(u []User) {
	slices.SortFunc(u, func(a, b User) int {
		if c := a.JoinedAt.Compare(b.JoinedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// Rooms lists the rooms that have members, sorted by name.
func (s *Server) Rooms() []RoomInfo {
	s.roomsMu.Lock()
	rooms := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.roomsMu.Unlock()
	out := make([]RoomInfo, 0, len(rooms))
	for _, r := range rooms {
		r.mu.Lock()
		out = append(out, RoomInfo{Name: r.name, Members: len(r.members), LastSeq: r.seq})
		r.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b RoomInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Members returns the members of room, or nil if it has none.
func (s *Server) Members(room string) []User {
	r := s.lookupRoom(room)
	if r == nil {
		return nil
	}
	return r.users()
}

func (s *Server) lookupRoom(name string) *room {
	s.roomsMu.Lock()
	defer s.roomsMu.Unlock()
	return s.rooms[name]
}

// Publish says text in room as the server itself: the message is
// sequenced, kept in history and delivered like any text, with From nil.
// It returns the message as delivered, or ErrNoSuchRoom when the room has
// no members. With a Broker, a room with no member on this server is
// published to through the broker, for its members on other servers (and
// its history), and ErrNoSuchRoom is never returned. Each Publish with a
// Broker has a key of its own: a broker out of reach (ErrUnavailable)
// makes it try again, with that key, every 100 ms to 2 s, until the text
// is kept, once, or ctx ends or the server closes; it then returns an
// *Error with CodeUnavailable that also wraps ctx's error (or ErrClosed),
// and the text may still be kept, once. Set a deadline on ctx to bound
// the wait.
//
// Publish waits for its turn in the room's order (behind texts being
// sequenced, and the HistoryStore's Append of each). If ctx ends before
// its turn comes, it returns ctx's error and the text is not sequenced,
// ever. Once its turn has come the text is kept and sequenced unless the
// HistoryStore fails (its Append is given ctx).
func (s *Server) Publish(ctx context.Context, room, text string) (ChatMessage, error) {
	if err := ctx.Err(); err != nil {
		return ChatMessage{}, err
	}
	if text == "" {
		return ChatMessage{}, ErrInvalidText
	}
	if s.cfg.broker == nil {
		r := s.lookupRoom(room)
		if r == nil {
			return ChatMessage{}, ErrNoSuchRoom
		}
		return r.publish(ctx, nil, nil, text, "", "")
	}
	// A client's keys are prefixed by its name key, never empty: one
	// starting with 0x00 is no client's.
	key := "\x00" + s.newID()
	var pause time.Duration
	for {
		var (
			msg ChatMessage
			err error
		)
		if r := s.lookupRoom(room); r != nil {
			msg, err = r.publish(ctx, nil, nil, text, "", key)
		} else {
			msg, err = s.publishRemote(ctx, room, text, key)
		}
		if e, ok := errors.AsType[*Error](err); !ok || e.Code != CodeUnavailable {
			return msg, err
		}
		if perr := unavailablePause(ctx, s.runCtx.Done(), &pause); perr != nil {
			return ChatMessage{}, fmt.Errorf("%w: %w", err, perr)
		}
		if s.runCtx.Err() != nil {
			return ChatMessage{}, fmt.Errorf("%w: %w", err, ErrClosed)
		}
	}
}

// Kick disconnects the online user called name, telling it reason; its
// rooms are told it left with reason "kicked". It returns at once;
// ErrNoSuchUser if nobody of that name is online. With a UserBroker, a
// user on another server of the service is kicked there (Kick then waits
// for that server's answer, at most 5 s); the error wraps ErrUnavailable
// when that server, or the broker's service, is out of reach for now.
func (s *Server) Kick(name, reason string) error {
	s.mu.Lock()
	c := s.names[nameKey(name)]
	s.mu.Unlock()
	if ub := s.userBroker(); c == nil && ub != nil {
		return s.kickRemote(ub, name, reason)
	}
	if c == nil {
		return ErrNoSuchUser
	}
	c.finish(CloseKicked, orDefault(reason, "kicked by the server"), "kicked")
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Shutdown stops the server gracefully: it stops accepting connections and
// texts, delivers every text already accepted, tells every client that the
// server is shutting down, and waits for the clients to go and for every
// goroutine to end. If ctx ends first, it closes the server as Close does
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown(ctx)
	done := make(chan struct{})
	go func() {
		s.waitServe()
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// beginShutdown stops accepting connections and texts and tells every
// client the server is shutting down. It waits, until ctx ends, for the
// texts being sequenced (kept in history) to be delivered, so that every
// text accepted before the shutdown reaches the queues before the byes.
func (s *Server) beginShutdown(ctx context.Context) {
	s.stop()
	s.setReady()
	s.draining.Store(true)
	// A barrier on every room's order: a text past its draining check
	// (perhaps waiting on the history store) completes and is queued, and
	// every later one sees draining and is refused. roomsMu is released
	// first: the order is never taken under it.
	s.roomsMu.Lock()
	rooms := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.roomsMu.Unlock()
	for _, r := range rooms {
		if r.lockOrder(ctx) != nil {
			break // out of time: the connections are closed next anyway
		}
		err := r.settle(ctx)
		r.unlockOrder()
		if err != nil {
			break
		}
	}
	for _, c := range s.connList() {
		c.shutdown()
	}
}

// Close closes every connection at once, telling clients the server is
// shutting down, and returns once every goroutine the server owns has
// ended (a hook that ignores its context delays it). It is idempotent;
// Serve returns nil.
func (s *Server) Close() error {
	s.closeConns()
	s.waitServe()
	s.wg.Wait()
	return nil
}

// closeConns stops the server and closes every connection without waiting.
func (s *Server) closeConns() {
	s.stop()
	s.setReady()
	s.closing.Do(func() {
		close(s.closedCh)
		s.cancelRun()
	})
	for _, c := range s.connList() {
		c.fail(CloseServerShutdown, "server closed", "shutdown")
	}
}

func (s *Server) connList() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// goFor runs f on a goroutine the server waits for, if c is still
// registered: a registered connection's own goroutine is running, so the
// wait group's count cannot be zero, and Serve's final Wait cannot have
// begun.
func (s *Server) goFor(c *conn, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		s.wg.Go(f)
	}
}

func (s *Server) stop() { s.stopping.Do(func() { close(s.stopCh) }) }

func (s *Server) waitServe() {
	s.mu.Lock()
	done := s.serveDone
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (s *Server) newID() string {
	return s.idPfx + strconv.FormatUint(s.ids.Add(1), 36)
}

func newSessionToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// register admits a connection that said a valid hello as id. A hello
// carrying the session token of a connection still registered resumes that
// session: same user, and register returns the connection it replaces.
// With a data directory, a token of a session no connection holds (the
// server dropped it, or restarted) restores that session (restored): same
// user ID and name. A token too old for either (WithSessionMaxAge) is as
// one the server does not know: the hello is a new session's. Otherwise
// register returns the close code of a refusal.
func (s *Server) register(c *conn, id Identity, session string) (old *conn, restored bool, code CloseCode, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isStopped() {
		return nil, false, CloseServerShutdown, "server shutting down"
	}
	key := nameKey(id.Name)
	if session != "" {
		o, t, ok := s.sessionLocked(session)
		switch {
		case !ok:
		case o != nil && o != c && !o.ending() && (id.ID == "" || id.ID == o.user.ID) && s.holdsLocked(o, session, t):
			old = o
			c.user = o.user
			key = o.key
			c.sent = o.sent // the keys of its texts survive the resume
			c.sessionID = o.sessionID
			c.resumedWith = session
		case o == nil && t.id != "" && s.freshLocked(t) && s.restoreLocked(c, id, t):
			restored = true
			key = nameKey(c.user.Name)
			c.sessionID = t.id
			c.resumedWith = session
		}
	}
	if old == nil && !restored {
		if s.names[key] != nil {
			return nil, false, CloseNameTaken, fmt.Sprintf("the name %q is taken", id.Name)
		}
		if id.ID != "" && s.byID[id.ID] != nil {
			return nil, false, CloseNameTaken, "you are already online"
		}
		c.user = User{ID: orDefault(id.ID, s.newID()), Name: id.Name, JoinedAt: time.Now().UTC(), Data: id.Data}
		c.sessionID = ""
	}
	// With a data directory every welcome has a token issued now, so that
	// a session in use never grows too old (WithSessionMaxAge); the
	// session's older tokens still find it (by its ID). Without one a
	// resumed session keeps its token. Either way a client whose
	// connection is cut again before it reads the welcome still holds a
	// token that works.
	switch {
	case s.tokens != nil:
		session, c.sessionID = s.tokens.issue(c.user, c.sessionID, s.cfg.clock())
	case old == nil:
		session = newSessionToken()
		c.sessionID = session
	}
	if c.sent == nil {
		sid := ""
		if s.tokens != nil {
			sid = c.sessionID
		}
		c.sent = newSentKeys(s.cfg.sendKeyWindow, sid, false)
	}
	c.key = key
	c.session = session
	c.from = &User{ID: c.user.ID, Name: c.user.Name, Data: c.user.Data}
	s.names[key] = c
	s.byID[c.user.ID] = c
	s.sessions[c.sessionID] = c
	s.handshakes--
	c.welcomed = true
	return old, restored, CloseNormal, ""
}

// sessionLocked returns the connection holding the session a hello's
// token names, if any, and, for a token this server signed (with its data
// directory's key), what it says. ok is false when the token names no
// session: signed tokens are expected, and this one is not authentic.
// Called with s.mu held.
func (s *Server) sessionLocked(token string) (o *conn, t sessionToken, ok bool) {
	if s.tokens == nil {
		return s.sessions[token], t, true
	}
	if t, ok = s.tokens.parse(token); !ok {
		return nil, t, false
	}
	return s.sessions[t.id], t, true
}

// freshLocked reports whether a signed token is younger than the maximum
// age (WithSessionMaxAge). Called with s.mu held.
func (s *Server) freshLocked(t sessionToken) bool {
	return s.cfg.clock().Sub(t.issued) < s.cfg.sessionMaxAge
}

// holdsLocked reports whether token, which names o's session, may resume
// it: a fresh token, or, however old, the one o was welcomed with or
// resumed with, so that a client connected for longer than the maximum
// age, which holds no newer token, keeps its session when it reconnects.
// Called with s.mu held.
func (s *Server) holdsLocked(o *conn, token string, t sessionToken) bool {
	return s.tokens == nil || token == o.session || token == o.resumedWith || s.freshLocked(t)
}

// restoreLocked restores the session of token t for c, if the hello's
// identity agrees with it (the authenticator's ID if it gives one, else,
// when there is an authenticator, its name), and the session's user ID
// and name are free. The session keeps its user (the authenticator's Data
// is this connection's) and its ID; the keys of its texts said before are
// recalled from the history as it says texts again (sentKeys.recall).
// Called with s.mu held.
func (s *Server) restoreLocked(c *conn, id Identity, t sessionToken) bool {
	switch {
	case id.ID != "" && id.ID != t.user.ID:
		return false
	case id.ID == "" && s.cfg.auth != nil && nameKey(id.Name) != nameKey(t.user.Name):
		return false
	case s.names[nameKey(t.user.Name)] != nil || s.byID[t.user.ID] != nil:
		return false
	}
	c.user = t.user
	c.user.Data = id.Data
	c.sent = newSentKeys(s.cfg.sendKeyWindow, t.id, true)
	return true
}

// current reports whether c is its user's current connection: a resumed
// session takes the rooms of the connection it replaced, never the other
// way round. Called with a room's lock held (s.mu is taken after it).
func (s *Server) current(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[c.key] == c
}

// unregister forgets a connection; it is called once, by its teardown.
func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.perAddr[c.addrKey]--; s.perAddr[c.addrKey] <= 0 {
		delete(s.perAddr, c.addrKey)
	}
	if !c.welcomed {
		s.handshakes--
		return
	}
	if s.names[c.key] == c {
		delete(s.names, c.key)
	}
	if s.byID[c.user.ID] == c {
		delete(s.byID, c.user.ID)
	}
	if s.sessions[c.sessionID] == c {
		delete(s.sessions, c.sessionID)
	}
}

// lookupName returns the welcomed connection of the user called name.
func (s *Server) lookupName(name string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[nameKey(name)]
}
