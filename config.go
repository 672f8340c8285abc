package garou

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Server defaults. Every option documents its own.
const (
	DefaultAddr              = "127.0.0.1:4433"
	DefaultMaxConnections    = 100
	DefaultMaxConnsPerAddr   = 20
	DefaultMaxHandshakes     = 64
	DefaultIdleTimeout       = 300 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultMaxMessageSize    = 1 << 20
	DefaultSendQueueBytes    = 4 << 20
	DefaultHistorySize       = 100
	DefaultMaxRoomsPerClient = 32
	DefaultMaxRoomMembers    = 1000
	DefaultRate              = 50
	DefaultBurst             = 100
	DefaultShutdownTimeout   = 5 * time.Second
	DefaultSendKeyWindow     = 1024
	DefaultPresenceInterval  = 200 * time.Millisecond
	DefaultPresenceLimit     = 100
	DefaultSessionMaxAge     = 7 * 24 * time.Hour

	DefaultLocalAddr      = "0.0.0.0:0"
	DefaultConnectTimeout = 10 * time.Second
	DefaultKeepAlive      = 30 * time.Second
	DefaultProbeInterval  = 10 * time.Second
	DefaultReceiveBuffer  = 1024
	DefaultReadAhead      = 1 << 20
	DefaultReconnects     = 10
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
)

// MinMessageSize is the smallest maximum message size either side accepts:
// a welcome or an error must always fit.
const MinMessageSize = 4 << 10

// ServerOption configures a Server. Options are applied in order by
// NewServer, then the whole configuration is validated once.
type ServerOption interface{ applyServer(*serverConfig) }

// ClientOption configures a Client. Options are applied in order by Dial,
// then the whole configuration is validated once.
type ClientOption interface{ applyClient(*clientConfig) }

// SharedOption is an option that configures a Server and a Client alike.
type SharedOption interface {
	ServerOption
	ClientOption
}

type serverOptionFunc func(*serverConfig)

func (f serverOptionFunc) applyServer(c *serverConfig) { f(c) }

type clientOptionFunc func(*clientConfig)

func (f clientOptionFunc) applyClient(c *clientConfig) { f(c) }

type sharedOption struct {
	server func(*serverConfig)
	client func(*clientConfig)
}

func (o sharedOption) applyServer(c *serverConfig) { o.server(c) }
func (o sharedOption) applyClient(c *clientConfig) { o.client(c) }

type serverConfig struct {
	addr              string
	maxConns          int
	maxConnsPerAddr   int
	maxHandshakes     int
	idleTimeout       time.Duration
	handshakeTimeout  time.Duration
	maxMessageSize    int
	sendQueueBytes    int
	historySize       int
	history           HistoryStore
	broker            Broker
	maxRoomsPerClient int
	maxRoomMembers    int
	rate              float64
	burst             int
	shutdownTimeout   time.Duration
	sendKeyWindow     int
	dataDir           string
	sessionMaxAge     time.Duration
	clock             func() time.Time // what session tokens are issued and aged by
	presenceInterval  time.Duration
	presenceLimit     int
	tlsConfig         *tls.Config
	logger            *slog.Logger
	auth              AuthFunc
	filter            MessageFunc
	onJoin            JoinFunc
	onLeave           LeaveFunc
}

func defaultServerConfig() serverConfig {
	return serverConfig{
		addr:              DefaultAddr,
		maxConns:          DefaultMaxConnections,
		maxConnsPerAddr:   DefaultMaxConnsPerAddr,
		maxHandshakes:     DefaultMaxHandshakes,
		idleTimeout:       DefaultIdleTimeout,
		handshakeTimeout:  DefaultHandshakeTimeout,
		maxMessageSize:    DefaultMaxMessageSize,
		sendQueueBytes:    DefaultSendQueueBytes,
		historySize:       DefaultHistorySize,
		maxRoomsPerClient: DefaultMaxRoomsPerClient,
		maxRoomMembers:    DefaultMaxRoomMembers,
		rate:              DefaultRate,
		burst:             DefaultBurst,
		shutdownTimeout:   DefaultShutdownTimeout,
		sendKeyWindow:     DefaultSendKeyWindow,
		sessionMaxAge:     DefaultSessionMaxAge,
		clock:             time.Now,
		presenceInterval:  DefaultPresenceInterval,
		presenceLimit:     DefaultPresenceLimit,
		logger:            slog.Default(),
	}
}

func (c *serverConfig) validate() error {
	switch {
	case c.maxConns < 1:
		return optErr("max connections must be at least 1, got %d", c.maxConns)
	case c.maxConnsPerAddr < 1:
		return optErr("max connections per address must be at least 1, got %d", c.maxConnsPerAddr)
	case c.maxHandshakes < 1:
		return optErr("max handshakes must be at least 1, got %d", c.maxHandshakes)
	case c.idleTimeout <= 0:
		return optErr("idle timeout must be positive, got %v", c.idleTimeout)
	case c.handshakeTimeout <= 0:
		return optErr("handshake timeout must be positive, got %v", c.handshakeTimeout)
	case c.maxMessageSize < MinMessageSize:
		return optErr("max message size must be at least %d, got %d", MinMessageSize, c.maxMessageSize)
	case c.sendQueueBytes < c.maxMessageSize:
		return optErr("send queue bound (%d) must be at least the max message size (%d)", c.sendQueueBytes, c.maxMessageSize)
	case c.historySize < 0:
		return optErr("history size must not be negative, got %d", c.historySize)
	case c.maxRoomsPerClient < 1:
		return optErr("max rooms per client must be at least 1, got %d", c.maxRoomsPerClient)
	case c.maxRoomMembers < 1:
		return optErr("max room members must be at least 1, got %d", c.maxRoomMembers)
	case c.rate < 0 || (c.rate > 0 && c.burst < 1):
		return optErr("rate must be 0 (unlimited) or positive with a burst of at least 1, got %v/%d", c.rate, c.burst)
	case c.shutdownTimeout <= 0:
		return optErr("shutdown timeout must be positive, got %v", c.shutdownTimeout)
	case c.sendKeyWindow < 0:
		return optErr("send key window must not be negative, got %d", c.sendKeyWindow)
	case c.sessionMaxAge <= 0:
		return optErr("session max age must be positive, got %v", c.sessionMaxAge)
	case c.presenceInterval < 0:
		return optErr("presence interval must not be negative, got %v", c.presenceInterval)
	case c.presenceLimit < 0:
		return optErr("presence limit must not be negative, got %d", c.presenceLimit)
	case c.logger == nil:
		return optErr("logger must not be nil")
	}
	if c.addr == "" {
		return optErr("address must not be empty")
	}
	if c.history == nil {
		c.history = NewMemoryHistory(c.historySize)
	}
	return nil
}

type clientConfig struct {
	localAddr      string
	connectTimeout time.Duration
	keepAlive      time.Duration
	probe          time.Duration
	idleTimeout    time.Duration
	maxMessageSize int
	tlsConfig      *tls.Config
	insecure       bool
	fingerprint    string
	logger         *slog.Logger
	token          string
	rooms          []string
	receiveBuffer  int
	onState        func(StateChange)
	reconnects     int
	zeroRTT        bool
	backoffMin     time.Duration
	backoffMax     time.Duration
	listenPacket   func(ctx context.Context) (net.PacketConn, error)
	servers        []string
}

func defaultClientConfig() clientConfig {
	return clientConfig{
		localAddr:      DefaultLocalAddr,
		connectTimeout: DefaultConnectTimeout,
		keepAlive:      DefaultKeepAlive,
		probe:          DefaultProbeInterval,
		idleTimeout:    0, // derived from the keep-alive in validate
		maxMessageSize: DefaultMaxMessageSize,
		logger:         slog.New(slog.DiscardHandler),
		rooms:          []string{DefaultRoom},
		receiveBuffer:  DefaultReceiveBuffer,
		reconnects:     DefaultReconnects,
		backoffMin:     DefaultBackoffMin,
		backoffMax:     DefaultBackoffMax,
	}
}

func (c *clientConfig) validate() error {
	if c.idleTimeout == 0 {
		c.idleTimeout = 2 * c.keepAlive
		if c.keepAlive <= 0 {
			c.idleTimeout = 2 * DefaultKeepAlive
		}
	}
	switch {
	case c.connectTimeout <= 0:
		return optErr("connect timeout must be positive, got %v", c.connectTimeout)
	case c.keepAlive < 0:
		return optErr("keep-alive must not be negative, got %v", c.keepAlive)
	case c.probe < 0:
		return optErr("probe interval must not be negative, got %v", c.probe)
	case c.idleTimeout <= 0:
		return optErr("idle timeout must be positive, got %v", c.idleTimeout)
	case c.keepAlive > 0 && c.keepAlive >= c.idleTimeout:
		return optErr("keep-alive (%v) must be shorter than the idle timeout (%v)", c.keepAlive, c.idleTimeout)
	case c.maxMessageSize < MinMessageSize:
		return optErr("max message size must be at least %d, got %d", MinMessageSize, c.maxMessageSize)
	case c.receiveBuffer < 1:
		return optErr("receive buffer must be at least 1, got %d", c.receiveBuffer)
	case c.reconnects < 0:
		return optErr("reconnect attempts must not be negative, got %d", c.reconnects)
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return optErr("reconnect backoff must satisfy 0 < min <= max, got %v..%v", c.backoffMin, c.backoffMax)
	case c.logger == nil:
		return optErr("logger must not be nil")
	case c.insecure && c.fingerprint != "":
		return optErr("WithInsecureSkipVerify and WithFingerprint exclude each other")
	case hasDuplicate(c.rooms):
		return optErr("WithRooms names a room twice")
	}
	if c.fingerprint != "" {
		if _, err := parseFingerprint(c.fingerprint); err != nil {
			return optErr("%v", err)
		}
	}
	for _, r := range c.rooms {
		if err := ValidateRoom(r); err != nil {
			return optErr("room %q: %v", r, err)
		}
	}
	if c.listenPacket == nil {
		addr := c.localAddr
		c.listenPacket = func(ctx context.Context) (net.PacketConn, error) {
			var lc net.ListenConfig
			return lc.ListenPacket(ctx, "udp", addr)
		}
	}
	return nil
}

func hasDuplicate(s []string) bool {
	seen := make(map[string]bool, len(s))
	for _, v := range s {
		if seen[v] {
			return true
		}
		seen[v] = true
	}
	return false
}

func optErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, args...))
}

// WithAddr sets the UDP address ListenAndServe binds. Default "127.0.0.1:4433".
func WithAddr(addr string) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.addr = addr })
}

// WithMaxConnections limits the connected clients (handshakes included).
// A connection over the limit is closed at once with CloseServerFull and a
// reason. Default 100.
func WithMaxConnections(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.maxConns = n })
}

// WithMaxConnectionsPerAddr limits the connections from one IP address;
// one over the limit is closed with CloseTooManyConns. Default 20.
func WithMaxConnectionsPerAddr(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.maxConnsPerAddr = n })
}

// WithMaxHandshakes limits the connections that have not yet sent their
// hello; further connections are refused with CloseServerFull. Default 64.
func WithMaxHandshakes(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.maxHandshakes = n })
}

// WithIdleTimeout sets the QUIC idle timeout: a connection with no packet
// for this long is dropped (the smaller of both sides' values applies).
// Default 300 s on the server; on the client, twice the keep-alive period
// (60 s with the default keep-alive, and when keep-alives are off).
func WithIdleTimeout(d time.Duration) SharedOption {
	return sharedOption{
		server: func(c *serverConfig) { c.idleTimeout = d },
		client: func(c *clientConfig) { c.idleTimeout = d },
	}
}

// WithHandshakeTimeout bounds the time from connection to hello; a client
// that has not said hello by then is closed with CloseHandshakeTimeout.
// Default 10 s.
func WithHandshakeTimeout(d time.Duration) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.handshakeTimeout = d })
}

// WithMaxMessageSize bounds a frame's JSON body in bytes, in both
// directions: the server rejects a longer frame from its length prefix, and
// never sends a client a frame over the client's limit. Default 1 MiB;
// at least MinMessageSize.
func WithMaxMessageSize(n int) SharedOption {
	return sharedOption{
		server: func(c *serverConfig) { c.maxMessageSize = n },
		client: func(c *clientConfig) { c.maxMessageSize = n },
	}
}

// WithSendQueueBytes bounds the bytes queued for one client. A client that
// reads so slowly that its queue passes the bound is disconnected with
// CloseSlowConsumer, so that it never delays anyone else. Default 4 MiB.
func WithSendQueueBytes(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.sendQueueBytes = n })
}

// WithHistorySize sets how many texts the default history keeps per room,
// for joiners asking for recent messages and clients resuming. Default 100;
// 0 keeps none.
func WithHistorySize(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.historySize = n })
}

// WithHistoryStore replaces the in-memory history, for instance with a
// database; see HistoryStore for when it is called and what its errors do.
// Default NewMemoryHistory(size of WithHistorySize).
func WithHistoryStore(h HistoryStore) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.history = h })
}

// WithDataDir keeps, in dir (created if missing, files readable by the
// owner only), what lets clients carry on across the server's restarts: an
// identity that lets them resume rooms by number, the development
// certificate they pin (when no TLS config is given), the TLS
// session-ticket key (TLS resumption and 0-RTT survive a restart), the
// QUIC stateless-reset key (clients of a run that crashed learn at their
// next packet that their connection is gone) and the key that
// authenticates session tokens (session.key): a token then restores its
// session, same user ID, once no connection holds it, after a restart
// too, for WithSessionMaxAge after it was issued; the keys of the
// session's texts are looked up in the rooms' history
// (ChatMessage.SenderKey), so a text retried across the restart is not
// sequenced twice, and its direct messages sent again keep their IDs, so
// that their recipients drop the copies. Numbering continues across a restart
// when the HistoryStore is a SeqKeeper, as a durable one is. A damaged key
// file is an error, not a new key. Default: none; every run is new to
// clients.
func WithDataDir(dir string) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.dataDir = dir })
}

// WithSessionMaxAge sets how long a session token stays good after the
// welcome that issued it, with a data directory (WithDataDir): a token
// older than d no longer restores its session once no connection holds
// it, nor resumes one held by a connection it was not issued to (or
// resumed with); its hello starts a new session, as with a token the
// server does not recognise. Every welcome issues the session a new
// token, so a user who connects at least once within every d keeps the
// session; a single connection held for longer than d keeps it while the
// server holds that connection, but not across a restart. d bounds how
// long a token copied from a client (a lost device, a leaked log) can be
// used. The default, 7 days, outlasts a weekend away and the time between
// deploys (each of which renews every connected client's token), so users
// do not notice it; a service whose users must not stay signed in so long
// sets less. Without a data directory tokens die with their sessions, and
// d does nothing. Default 7 days; it must be positive.
func WithSessionMaxAge(d time.Duration) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.sessionMaxAge = d })
}

// WithPresenceInterval sets how long the server gathers the joins and
// leaves of a room before it tells the members, in one "presence" frame
// (PROTOCOL.md §6): a crowd connecting at once costs each member one frame
// per interval, not one per join. A room of more than 10 members is told
// less often as it grows, every interval × members/10 (2 s for 100 members
// with the default), at most every 50 intervals, so that telling a room
// its presence costs O(10) frames per interval whatever its size. 0 tells
// every join and leave at once, in a frame of its own. A text sent by a
// user whose join is still being gathered first tells the join, so that
// nobody sees a text from a user before the user's join. The default is
// DefaultPresenceInterval (200ms).
func WithPresenceInterval(d time.Duration) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.presenceInterval = d })
}

// WithPresenceLimit sets the size above which a room's presence frames
// carry its member count instead of the names of who joined and left, as
// large rooms do elsewhere: in a room of thousands, names scroll by faster
// than anyone reads them, and each would cost every member a packet. A
// member pages through the names with Client.Members. 0 sends counts only. The default is DefaultPresenceLimit (100).
func WithPresenceLimit(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.presenceLimit = n })
}

// WithSendKeyWindow sets how many idempotency keys of texts and direct
// messages the server remembers per user session (the last n, across a
// resume of the session; with WithDataDir, the keys of a session restored
// from its token are looked up in its rooms' history): a text whose key is
// among them is not sequenced again, its sender gets the original
// acknowledgement. It bounds how many
// sends a client may have in flight across a reconnect and still have each
// sequenced exactly once. Default 1024; 0 remembers none.
func WithSendKeyWindow(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.sendKeyWindow = n })
}

// WithMaxRoomsPerClient limits the rooms one client is in. Default 32.
func WithMaxRoomsPerClient(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.maxRoomsPerClient = n })
}

// WithMaxRoomMembers limits the members of one room. Default 1000.
func WithMaxRoomMembers(n int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.maxRoomMembers = n })
}

// WithRateLimit sets each client's token bucket for requests (texts,
// direct messages, joins, leaves, lists): perSecond tokens a second, up to
// burst. A request over the limit is answered with CodeRateLimited. Every
// refused request and malformed frame counts toward flooding, and only a
// request carried out resets the count: the refusal after max(burst, 10)
// in a row closes the client with CloseFlooding, whether or not the rate
// limit is on. perSecond 0 disables the rate limit. Default 50 a second,
// burst 100.
func WithRateLimit(perSecond float64, burst int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.rate, c.burst = perSecond, burst })
}

// WithShutdownTimeout bounds the graceful shutdown that ending the context
// of Serve or ListenAndServe starts: the clients still connected after d
// are disconnected at once, as by Close. Default 5s. It does not apply to
// Shutdown, which its own context bounds.
func WithShutdownTimeout(d time.Duration) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.shutdownTimeout = d })
}

// WithTLSConfig sets the TLS configuration. On the server it must hold a
// certificate; default: a self-signed ECDSA P-256 development certificate
// made at start (see Server.Fingerprint). On the client, default: the
// system roots, with the server name taken from the address. The ALPN and
// TLS 1.3 minimum are always set by Garou.
func WithTLSConfig(cfg *tls.Config) SharedOption {
	return sharedOption{
		server: func(c *serverConfig) { c.tlsConfig = cfg },
		client: func(c *clientConfig) { c.tlsConfig = cfg },
	}
}

// WithLogger sets the structured logger. Default slog.Default() on the
// server; nothing is logged on the client.
func WithLogger(l *slog.Logger) SharedOption {
	return sharedOption{
		server: func(c *serverConfig) { c.logger = l },
		client: func(c *clientConfig) { c.logger = l },
	}
}

// WithAuthenticator sets the hook that sees every hello. Default: accept
// every valid name.
func WithAuthenticator(f AuthFunc) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.auth = f })
}

// WithMessageFilter sets the hook that passes, rewrites or rejects every
// text and direct message before it is sequenced. Default: pass all.
func WithMessageFilter(f MessageFunc) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.filter = f })
}

// WithJoinHook sets the hook asked before a user joins a room; it may
// refuse. Default: allow all.
func WithJoinHook(f JoinFunc) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.onJoin = f })
}

// WithLeaveHook sets the hook told after a user left a room. Default: none.
func WithLeaveHook(f LeaveFunc) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.onLeave = f })
}

// WithLocalAddr sets the local UDP address the client binds.
// Default "0.0.0.0:0".
func WithLocalAddr(addr string) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.localAddr = addr })
}

// WithPacketConn makes the client open its UDP socket with f, once per
// connection attempt, instead of binding WithLocalAddr. The client closes
// the sockets f returns. Default: none.
func WithPacketConn(f func(ctx context.Context) (net.PacketConn, error)) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.listenPacket = f })
}

// WithConnectTimeout bounds one connection attempt, from the first packet to
// the welcome. Default 10 s.
func WithConnectTimeout(d time.Duration) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.connectTimeout = d })
}

// WithKeepAlive sets the QUIC keep-alive period; 0 disables keep-alives,
// and with them the probe of a silent server (WithProbeInterval), so that
// the client sends nothing by itself. Default 30 s.
func WithKeepAlive(d time.Duration) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.keepAlive = d })
}

// WithProbeInterval sets how long a client that expects nothing lets the
// server stay silent before it sends a request that changes nothing (a
// members page past the last one), whose packet, unlike a keep-alive PING,
// is large enough for a server that crashed and restarted with the same
// data directory to answer with a stateless reset: it bounds how long a
// client that only listens takes to learn of such a crash, and to get
// what is said after it. The client probes after the shorter of d and the
// keep-alive period, and not at all with keep-alives off
// (WithKeepAlive(0)) or d = 0. The cost is one small request and its
// reply per d on a connection that hears nothing else; its reply also
// stands in for QUIC's keep-alive PING, which is sent only after a
// keep-alive period without a packet from the server. Default 10 s.
func WithProbeInterval(d time.Duration) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.probe = d })
}

// WithInsecureSkipVerify makes the client accept any server certificate.
// For development only: anyone on the path can impersonate the server.
// Prefer WithFingerprint. Default off: the certificate is verified.
func WithInsecureSkipVerify() ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.insecure = true })
}

// WithFingerprint pins the server certificate: the client accepts exactly
// the certificate whose SHA-256 digest is fp (hex, colons allowed), as the
// server logs it, and no other. Default: none (the system roots verify).
func WithFingerprint(fp string) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.fingerprint = fp })
}

// WithToken sets the token sent in the hello for the server's authenticator.
// Default none.
func WithToken(token string) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.token = token })
}

// WithRooms sets the rooms the client joins in its hello. Default
// [DefaultRoom]; no rooms at all is allowed.
func WithRooms(rooms ...string) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.rooms = append([]string(nil), rooms...) })
}

// WithReceiveBuffer sets how many messages the client buffers for Receive.
// Replies to requests (the acknowledgement of a Send, the list of Users,
// ...) never wait for this buffer: they reach their callers whatever its
// state. When the buffer is full, the client goes on reading and holds up
// to DefaultReadAhead (1 MiB) of further messages, or one maximum-size
// message if that is larger, so that replies behind them still arrive;
// past that it stops reading until Receive makes room. The server then
// queues for the client, and cuts it as a slow consumer when its send
// queue passes its bound (see WithSendQueueBytes); the client reconnects
// and resumes, and Receive loses nothing. Call Receive promptly, from a
// goroutine of its own. Default 1024.
func WithReceiveBuffer(n int) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.receiveBuffer = n })
}

// WithZeroRTT makes a reconnect resume its TLS session in 0-RTT: the
// hello travels with the client's first packet. The server acts on it
// only once the handshake completes, so a replay does nothing; meanwhile
// it sends the texts the client missed in its rooms (the early replay,
// PROTOCOL.md §1), so that they arrive about a round trip sooner than
// without 0-RTT (bench/README.md measures it). A refused 0-RTT hello is
// said again. Off by default: quic-go v0.65 has a data race between opening a
// stream during 0-RTT and the handshake's transport parameters (quic-go
// issue #4303), which the race detector reports; turn it on where that is
// acceptable.
func WithZeroRTT() ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.zeroRTT = true })
}

// WithReconnect sets how many times in a row the client tries to reconnect
// after losing its connection; 0 turns reconnecting off. Losses that are
// retried: network failures and timeouts, and the transient close codes
// CloseServerShutdown (a server restarting for a deploy), CloseServerFull,
// CloseTooManyConns, CloseSlowConsumer, CloseHandshakeTimeout and
// CloseInternal (CloseCode.Reconnect). Final, never retried: the other close codes (kicked,
// replaced, bad or taken name, unauthorized, protocol, too large, flooding),
// a certificate the client does not trust or whose fingerprint does not
// match, and a hello the server refuses for good (name taken,
// authenticator's refusal). Default 10.
func WithReconnect(attempts int) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.reconnects = attempts })
}

// WithStateHandler sets a function told of every change of the client's
// connection state (see ConnState), in order. It runs on a goroutine of
// its own, never on the one reading the connection: it may block, which
// only delays the changes after it. The last call is the one with
// StateClosed; Close waits for it to return (so the handler must not wait
// for Close). Default: none.
func WithStateHandler(f func(StateChange)) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.onState = f })
}

// WithServers gives the client further addresses of the same service
// (servers sharing a Broker, see WithBroker): each reconnect attempt goes
// to the next address after the one last tried, in turn, starting with the
// one after the address lost, and the client resumes its rooms there. Each
// server must pass the same certificate checks (one pin, or certificates
// valid for their own host names). Default: none; the client reconnects to
// Dial's address only.
func WithServers(addrs ...string) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.servers = append([]string(nil), addrs...) })
}

// WithReconnectBackoff sets the backoff between reconnect attempts: it
// starts at min, doubles up to max, with full jitter. Default 100 ms to 5 s.
func WithReconnectBackoff(min, max time.Duration) ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.backoffMin, c.backoffMax = min, max })
}
