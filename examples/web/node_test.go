package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNode runs garou.js's tests (jstest/garou.test.mjs) under Node.js,
// against the example server over WebSocket: connect, join, say and its
// ack, resume after a lost connection, the retry of a text whose ack was
// lost, the errors a request can get, and the frame decoder's handling of
// bad input. The test tells them where to connect through the environment:
//
//   - GAROU_WS: the server's WebSocket URL;
//   - GAROU_PROXY_WS: the same through a proxy the tests can cut, as a
//     network failure would;
//   - GAROU_CONTROL: an HTTP server whose POST /down cuts every connection
//     through the proxy and refuses new ones, /up lets them through again,
//     /stall holds back what the server sends through the proxy (until a
//     /down discards it).
//
// It is skipped where node is not installed, or too old to have a
// WebSocket (it needs 20.10 or later).
func TestNode(t *testing.T) {
	node, flags := nodeWithWebSocket(t)
	// A data directory: a session the server dropped is restored from its
	// token, keys included (PROTOCOL.md §7, §9).
	s := serve(t, &options{http: "127.0.0.1:0", quic: "127.0.0.1:0", dataDir: t.TempDir()})
	defer s.stop(t)
	p := newProxy(t, s.HTTP)
	ctl := httptest.NewServer(p.control())
	defer ctl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(flags, "--test", "--test-reporter=spec", "jstest/garou.test.mjs")
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(cmd.Environ(),
		"GAROU_WS=ws://"+s.HTTP+"/garou",
		"GAROU_PROXY_WS=ws://"+p.ln.Addr().String()+"/garou",
		"GAROU_CONTROL="+ctl.URL,
		"NO_COLOR=1",
	)
	out, err := cmd.CombinedOutput()
	t.Logf("node %s:\n%s", strings.Join(args, " "), out)
	require.NoError(t, err, "node's tests failed")
}

// nodeWithWebSocket returns node's path and the flags that give it a
// WebSocket (none from Node.js 22), or skips the test.
func nodeWithWebSocket(t *testing.T) (string, []string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: garou.js's tests under Node.js need node 20.10 or later")
	}
	for _, flags := range [][]string{nil, {"--experimental-websocket"}} {
		check := append(flags, "-e", `process.exit(typeof WebSocket === "function" && typeof CustomEvent === "function" ? 0 : 3)`)
		if exec.Command(node, check...).Run() == nil {
			return node, flags
		}
	}
	v, _ := exec.Command(node, "--version").Output()
	t.Skipf("node %s has no WebSocket: garou.js's tests under Node.js need node 20.10 or later", strings.TrimSpace(string(v)))
	return "", nil
}

// proxy forwards TCP connections to a server, and can cut them.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	cond    *sync.Cond // signalled when stalled ends
	conns   map[net.Conn]struct{}
	down    bool // new connections are refused
	stalled bool // the server's bytes are held back
	closed  bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		p.closed = true
		p.cutLocked()
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(s, c, false) })
		p.wg.Go(func() { p.pipe(c, s, true) })
	}
}

// pipe copies from src to dst; fromServer's bytes wait while the proxy is
// stalled.
func (p *proxy) pipe(dst, src net.Conn, fromServer bool) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
		_ = dst.Close()
		_ = src.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromServer {
			p.mu.Lock()
			_, live := p.conns[src]
			for live && p.stalled {
				p.cond.Wait()
				_, live = p.conns[src]
			}
			p.mu.Unlock()
			if !live {
				return // cut while held: the bytes are lost
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cutLocked closes every connection through the proxy, both ends, and
// ends any stall, discarding what it held.
func (p *proxy) cutLocked() {
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
	p.stalled = false
	p.cond.Broadcast()
}

// control is the HTTP server the tests steer the proxy with.
func (p *proxy) control() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.down = true
		p.cutLocked()
		p.mu.Unlock()
	})
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.down = false
		p.mu.Unlock()
	})
	mux.HandleFunc("POST /stall", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.stalled = true
		p.mu.Unlock()
	})
	return mux
}
