package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// WebTransport (PROTOCOL.md §1.2): an HTTP/3 server on its own UDP port
// whose path /garou upgrades to WebTransport sessions, each one Garou
// connection of the server through garou.Server.ServeTransport: the
// client's bidirectional stream is the control stream, each room's frames
// come on a unidirectional stream the server opens, and typing comes as
// datagrams, exactly as over QUIC.
//
// The sessions are served by github.com/quic-go/webtransport-go v0.13.0,
// patched for quic-go v0.65.0 (third_party/webtransport-go/PATCHES.md):
// the released module does not build with the quic-go Garou uses.

// wtPath is the URL path of the WebTransport endpoint.
const wtPath = "/garou"

// Certificate lifetime: browsers accept a certificate pinned by its hash
// (serverCertificateHashes) only if it is ECDSA and valid for at most 14
// days; it is made valid for 13 and replaced once fewer than 3 remain.
const (
	certLifetime = 13 * 24 * time.Hour
	certRenewal  = 3 * 24 * time.Hour
	certFile     = "webtransport-cert.pem"
)

// wtCloseLinger is how long after closing a session its QUIC connection
// is closed too (a session has a connection of its own): long enough for
// the close to reach the client, and the bound on a datagram send waiting
// for the congestion window of a client gone quiet.
const wtCloseLinger = time.Second

// devCert is the WebTransport endpoint's self-signed certificate, kept in
// the data directory if there is one, and replaced before it expires. It
// is safe for concurrent use.
type devCert struct {
	path string // "": in memory only
	now  func() time.Time

	mu   sync.Mutex
	cert *tls.Certificate
	leaf *x509.Certificate
	hash [sha256.Size]byte
}

// loadDevCert returns the certificate kept in dir (dir "": none), or a new
// one if it has none usable.
func loadDevCert(dir string) (*devCert, error) {
	d := &devCert{now: time.Now}
	if dir != "" {
		d.path = filepath.Join(dir, certFile)
		if b, err := os.ReadFile(d.path); err == nil {
			d.use(b) // an unusable file is replaced below
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if _, err := d.current(); err != nil {
		return nil, err
	}
	return d, nil
}

// use takes the certificate and key PEM-encoded in b, if they are usable.
func (d *devCert) use(b []byte) bool {
	var certDER, keyDER []byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			certDER = blk.Bytes
		case "PRIVATE KEY":
			keyDER = blk.Bytes
		}
	}
	leaf, err := x509.ParseCertificate(certDER)
	if err != nil {
		return false
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return false
	}
	if _, ok := key.(*ecdsa.PrivateKey); !ok || leaf.NotAfter.Sub(leaf.NotBefore) > 14*24*time.Hour {
		return false
	}
	d.cert = &tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key, Leaf: leaf}
	d.leaf = leaf
	d.hash = sha256.Sum256(certDER)
	return true
}

// current returns the certificate, made anew (and kept) if it has fewer
// than certRenewal left.
func (d *devCert) current() (*tls.Certificate, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if d.leaf != nil && now.After(d.leaf.NotBefore) && d.leaf.NotAfter.Sub(now) > certRenewal {
		return d.cert, nil
	}
	b, err := newCertPEM(now)
	if err != nil {
		return nil, err
	}
	if !d.use(b) {
		return nil, errors.New("web: the new WebTransport certificate is unusable")
	}
	if d.path != "" {
		if err := writeFileAtomic(d.path, b); err != nil {
			return nil, err
		}
	}
	return d.cert, nil
}

// sha256 is the certificate's SHA-256 digest, what a page pins.
func (d *devCert) sha256() ([sha256.Size]byte, error) {
	if _, err := d.current(); err != nil {
		return [sha256.Size]byte{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hash, nil
}

func newCertPEM(now time.Time) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	from := now.Add(-time.Hour) // a little clock skew
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "garou web example (WebTransport)"},
		NotBefore:             from,
		NotAfter:              from.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(b, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}

func writeFileAtomic(name string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // once renamed, nothing
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// wtConfig is what the page fetches before each connection: where the
// WebTransport endpoint is and the certificate to pin.
type wtConfig struct {
	URL      string `json:"url"`
	Protocol string `json:"protocol"`
	SHA256   string `json:"sha256"`
}

// webTransport serves the WebTransport endpoint. Its ServeHTTP upgrades a
// request to a session and serves it until it ends; Close ends them all.
type webTransport struct {
	srv     *garou.Server
	cert    *devCert
	addr    *net.UDPAddr
	allowed func(*http.Request) bool
	log     *slog.Logger
	wt      *webtransport.Server
}

type quicConnKey struct{}

func newWebTransport(srv *garou.Server, cert *devCert, pc net.PacketConn, origins []string, log *slog.Logger) *webTransport {
	w := &webTransport{
		srv:     srv,
		cert:    cert,
		addr:    pc.LocalAddr().(*net.UDPAddr),
		allowed: checkOrigin(origins),
		log:     log,
	}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert.current()
		},
	})
	mux := http.NewServeMux()
	mux.Handle(wtPath, w)
	h3 := &http3.Server{
		Handler:   mux,
		TLSConfig: tlsConf,
		QUICConfig: &quic.Config{
			EnableDatagrams:                  true,
			EnableStreamResetPartialDelivery: true,
			HandshakeIdleTimeout:             10 * time.Second,
			// Browsers do not ping; garou.js asks after 25 s of silence.
			KeepAlivePeriod: 15 * time.Second,
			// A session needs the CONNECT stream and the control stream,
			// and HTTP/3's control and QPACK streams: any more are reset.
			MaxIncomingStreams:    4,
			MaxIncomingUniStreams: 8,
			// As the server's QUIC listener: small windows, growing to
			// one largest frame (the default 1 MiB, with room for the
			// stream header and HTTP/3's capsules).
			InitialStreamReceiveWindow:     32 << 10,
			MaxStreamReceiveWindow:         1<<20 + 64<<10,
			InitialConnectionReceiveWindow: 64 << 10,
			MaxConnectionReceiveWindow:     2 << 20,
		},
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			return context.WithValue(ctx, quicConnKey{}, c)
		},
	}
	w.wt = &webtransport.Server{
		H3:                   h3,
		ApplicationProtocols: []string{garou.ALPN},
		CheckOrigin:          w.allowed,
	}
	return w
}

// serve serves WebTransport on pc until Close.
func (w *webTransport) serve(pc net.PacketConn) error {
	err := w.wt.Serve(pc)
	// Close ends Serve's accept loop by cancelling its context.
	if errors.Is(err, context.Canceled) || errors.Is(err, quic.ErrServerClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close closes the endpoint and every session, and waits for them.
func (w *webTransport) Close() error { return w.wt.Close() }

// config is the page's wtConfig, for the page's host.
func (w *webTransport) config(r *http.Request) (wtConfig, error) {
	h, err := w.cert.sha256()
	if err != nil {
		return wtConfig{}, err
	}
	host := w.addr.IP.String()
	if w.addr.IP.IsUnspecified() {
		host = r.Host
		if hn, _, err := net.SplitHostPort(r.Host); err == nil {
			host = hn
		}
	}
	u := url.URL{Scheme: "https", Host: net.JoinHostPort(host, fmt.Sprint(w.addr.Port)), Path: wtPath}
	return wtConfig{URL: u.String(), Protocol: garou.ALPN, SHA256: hex.EncodeToString(h[:])}, nil
}

// serveConfig answers the page's request for the wtConfig.
func (w *webTransport) serveConfig(rw http.ResponseWriter, r *http.Request) {
	c, err := w.config(r)
	if err != nil {
		http.Error(rw, "no WebTransport certificate", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(rw).Encode(c)
}

// checkOrigin allows requests without an Origin (not from a page), and
// pages of the endpoint's own host name (any port: the page comes from
// the HTTP server; localhost and the loopback addresses count as one
// host) or of an origin host matching one of patterns (path.Match, as
// wsgarou's OriginPatterns).
func checkOrigin(patterns []string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil || u.Host == "" {
			return false
		}
		host := r.Host
		if hn, _, err := net.SplitHostPort(r.Host); err == nil {
			host = hn
		}
		if strings.EqualFold(u.Hostname(), host) || loopback(u.Hostname()) && loopback(host) {
			return true
		}
		for _, p := range patterns {
			if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(u.Host)); ok {
				return true
			}
		}
		return false
	}
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServeHTTP upgrades a request to a WebTransport session and serves it as
// a Garou connection until it ends. A page of another origin gets HTTP
// 403; a session that did not negotiate the protocol garou.ALPN is closed
// with CloseProtocol.
func (w *webTransport) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !w.allowed(r) {
		http.Error(rw, "the page's origin may not connect", http.StatusForbidden)
		return
	}
	up := &upgrading{ResponseWriter: rw}
	sess, err := w.wt.Upgrade(up, r)
	if err != nil {
		w.log.Debug("web: WebTransport upgrade failed", "remote", r.RemoteAddr, "err", err)
		if !up.taken {
			http.Error(rw, "not a WebTransport session", http.StatusBadRequest)
		}
		return
	}
	qc, _ := r.Context().Value(quicConnKey{}).(*quic.Conn)
	t := &wtConn{sess: sess, qc: qc}
	if sess.SessionState().ApplicationProtocol != garou.ALPN {
		t.CloseWithError(garou.CloseProtocol, "the WebTransport protocol "+garou.ALPN+" is required")
		return
	}
	t.drain.Go(t.refuseUniStreams)
	// The session ends the connection (t.Context); the request's context
	// ends with the session's stream, which a client's close ends too.
	_ = w.srv.ServeTransport(context.WithoutCancel(r.Context()), t)
	t.CloseWithError(garou.CloseNormal, "bye")
	t.drain.Wait()
}

// upgrading notes whether Upgrade took the request's stream: once it has,
// no HTTP response may be written (quic-go panics).
type upgrading struct {
	http.ResponseWriter
	taken bool
}

func (u *upgrading) HTTPStream() (*http3.Stream, error) {
	s, err := u.ResponseWriter.(http3.HTTPStreamer).HTTPStream()
	u.taken = err == nil
	return s, err
}

func (u *upgrading) ReceivedSettings() <-chan struct{} {
	return u.ResponseWriter.(http3.Settingser).ReceivedSettings()
}

func (u *upgrading) Settings() *http3.Settings {
	return u.ResponseWriter.(http3.Settingser).Settings()
}

func (u *upgrading) Flush() { u.ResponseWriter.(http.Flusher).Flush() }

// wtConn is one WebTransport session as a garou.DatagramTransport.
type wtConn struct {
	sess      *webtransport.Session
	qc        *quic.Conn // the session's QUIC connection, nil if unknown
	drain     sync.WaitGroup
	once      sync.Once
	closeOnce sync.Once
}

var _ garou.DatagramTransport = (*wtConn)(nil)

// errRefused resets the streams a client opens beyond its control stream.
const errRefused = webtransport.StreamErrorCode(garou.CloseProtocol)

func (c *wtConn) Context() context.Context { return c.sess.Context() }
func (c *wtConn) RemoteAddr() net.Addr     { return c.sess.RemoteAddr() }

// AcceptStream returns the client's first bidirectional stream, the
// control stream. Any later one is reset, as QUIC's stream limit refuses
// it on a native connection.
func (c *wtConn) AcceptStream(ctx context.Context) (garou.Stream, error) {
	str, err := c.sess.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	c.once.Do(func() { c.drain.Go(c.refuseStreams) })
	return wtStream{str}, nil
}

func (c *wtConn) refuseStreams() {
	for {
		str, err := c.sess.AcceptStream(c.sess.Context())
		if err != nil {
			return
		}
		str.CancelRead(errRefused)
		str.CancelWrite(errRefused)
	}
}

func (c *wtConn) refuseUniStreams() {
	for {
		str, err := c.sess.AcceptUniStream(c.sess.Context())
		if err != nil {
			return
		}
		str.CancelRead(errRefused)
	}
}

// OpenStream opens a room's stream: unidirectional, server to client.
func (c *wtConn) OpenStream(ctx context.Context) (garou.SendStream, error) {
	return c.sess.OpenUniStreamSync(ctx)
}

// SendDatagram sends a signal as a datagram of the session.
func (c *wtConn) SendDatagram(b []byte) error { return c.sess.SendDatagram(b) }

// CloseWithError closes the session with the close code as its error
// code and the text as its reason, and its QUIC connection wtCloseLinger
// later.
func (c *wtConn) CloseWithError(code garou.CloseCode, text string) error {
	c.closeOnce.Do(func() {
		_ = c.sess.CloseWithError(webtransport.SessionErrorCode(code), text)
		if c.qc != nil {
			qc := c.qc
			time.AfterFunc(wtCloseLinger, func() { _ = qc.CloseWithError(0, "") })
		}
	})
	return nil
}

// wtStream is the control stream. A client that closes its session with
// error code 0 (a page's WebTransport.close()), or its HTTP/3 connection
// with H3_NO_ERROR, has left, as one that ends the stream has: its reads
// end with io.EOF.
type wtStream struct{ *webtransport.Stream }

func (s wtStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if se, ok := errors.AsType[*webtransport.SessionError](err); ok && se.Remote && se.ErrorCode == 0 {
		err = io.EOF
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote && ae.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		err = io.EOF
	}
	return n, err
}
