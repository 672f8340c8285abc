// Command web serves Garou to browsers: a chat page, and the WebTransport
// and WebSocket endpoints it talks to, next to the QUIC listener of the
// other clients.
//
//	go run -C examples/web . [-http 127.0.0.1:8080] [-webtransport 127.0.0.1:4434] [-quic 127.0.0.1:4433] [-data DIR]
//
// then open http://127.0.0.1:8080/?name=alice (and ?name=bob in another
// tab). The page (static/index.html, static/chat.js) runs on garou.js, a
// client of PROTOCOL.md in one ES module; it shows the rooms, their
// members, who is typing and the connection's state, and resumes every
// room after a lost connection. It connects over WebTransport (HTTP/3 on
// the UDP address -webtransport, its self-signed certificate pinned by the
// hash the page fetches from /webtransport.json) when the browser has it,
// and over WebSocket (/garou on -http) otherwise, or if WebTransport fails
// to connect; ?transport=websocket makes it use WebSocket. Browsers offer
// WebTransport only to secure pages: served over HTTPS, or from localhost
// or 127.0.0.1 as here. QUIC clients of the same server share the rooms:
//
//	go run ./examples/client -name carol -addr 127.0.0.1:4433 -fingerprint FP
//
// With -data the server keeps its texts (a bolt file), its keys and the
// WebTransport certificate in DIR, and a restart loses nothing: the pages
// and the QUIC clients resume every room where they were. Ctrl-C shuts it
// down gracefully. -origin names other hosts whose pages may connect (the
// page's own host always may). -webtransport "" serves no WebTransport.
//
// The WebTransport certificate is self-signed ECDSA P-256, valid for 13
// days, as browsers require of a certificate they pin by its hash
// (serverCertificateHashes: at most 14 days); the server replaces it when
// 3 days remain, and the page fetches the hash before each connection.
//
// WebTransport (PROTOCOL.md §1.2) is served by
// github.com/quic-go/webtransport-go v0.13.0, patched in
// third_party/webtransport-go for quic-go v0.65.0 (PATCHES.md says how)
// and used through a replace in this module's go.mod only: the released
// module does not build with the quic-go Garou uses. A patched copy rather
// than a WebTransport server of our own on quic-go's http3: the patch is a
// few lines in one function, and the library's own tests (and its
// integration tests) run against it, where a server of our own (extended
// CONNECT, SETTINGS, stream hijacking, datagrams, session close) would be
// as much new code, tested only here. Drop the copy and the replace once a
// release builds with quic-go v0.65.0.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/boltstore"
	"github.com/garou-chat/garou/wsgarou"
)

//go:embed static
var static embed.FS

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = run(ctx, o, func(a addrs) {
		fmt.Printf("garou web chat on http://%s/?name=alice (QUIC on %s, fingerprint %s)\n", a.HTTP, a.QUIC, a.Fingerprint)
		if a.WebTransport != "" {
			fmt.Printf("WebTransport on https://%s%s\n", a.WebTransport, wtPath)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	http, quic, dataDir string
	webTransport        string // UDP address; "": none
	origins             []string
	log                 *slog.Logger
	serverOpts          []garou.ServerOption // more, after the command's own
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("web", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.http, "http", "127.0.0.1:8080", "TCP address of the page and its WebSocket")
	fs.StringVar(&o.quic, "quic", "127.0.0.1:4433", "UDP address of the QUIC listener")
	fs.StringVar(&o.webTransport, "webtransport", "127.0.0.1:4434", `UDP address of the WebTransport endpoint ("": none)`)
	fs.StringVar(&o.dataDir, "data", "", "directory keeping texts and keys across restarts (default: none, in memory)")
	origin := fs.String("origin", "", "comma-separated hosts of other pages allowed to connect")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *origin != "" {
		o.origins = strings.Split(*origin, ",")
	}
	return o, nil
}

// addrs are where run serves, once it does.
type addrs struct {
	HTTP, QUIC, Fingerprint string
	WebTransport            string // "": none
}

// run serves until ctx ends, then shuts down gracefully. ready is called
// once both listeners are bound.
func run(ctx context.Context, o *options, ready func(addrs)) error {
	logger := o.log
	if logger == nil {
		logger = slog.Default()
	}
	opts := []garou.ServerOption{garou.WithLogger(logger), garou.WithShutdownTimeout(5 * time.Second)}
	opts = append(opts, o.serverOpts...)
	if o.dataDir != "" {
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return err
		}
		store, err := boltstore.Open(filepath.Join(o.dataDir, "history.db"))
		if err != nil {
			return err
		}
		defer store.Close() // once the server is done
		opts = append(opts, garou.WithDataDir(o.dataDir), garou.WithHistoryStore(store))
	}
	srv, err := garou.NewServer(opts...)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", o.quic)
	if err != nil {
		return err
	}
	defer pc.Close()
	ln, err := lc.Listen(ctx, "tcp", o.http)
	if err != nil {
		return err
	}
	defer ln.Close()

	files, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServerFS(files))
	mux.Handle("/garou", wsgarou.New(srv, &wsgarou.Options{OriginPatterns: o.origins}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	var wt *webTransport
	wtDone := make(chan error, 1)
	if o.webTransport != "" {
		cert, err := loadDevCert(o.dataDir)
		if err != nil {
			return err
		}
		wpc, err := lc.ListenPacket(ctx, "udp", o.webTransport)
		if err != nil {
			return err
		}
		defer wpc.Close()
		wt = newWebTransport(srv, cert, wpc, o.origins, logger)
		mux.HandleFunc("/webtransport.json", wt.serveConfig)
		go func() { wtDone <- wt.serve(wpc) }()
	} else {
		mux.HandleFunc("/webtransport.json", http.NotFound)
		wtDone <- nil
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, pc) }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Serve(ln) }()
	<-srv.Ready()
	a := addrs{HTTP: ln.Addr().String(), QUIC: pc.LocalAddr().String(), Fingerprint: srv.Fingerprint()}
	if wt != nil {
		a.WebTransport = wt.addr.String()
	}
	ready(a)

	<-ctx.Done()
	// Serve shuts the server down gracefully (its WebSockets and
	// WebTransport sessions included) when ctx ends; then the page server
	// and the WebTransport endpoint stop.
	err = <-served
	if wt != nil {
		_ = wt.Close()
	}
	if werr := <-wtDone; werr != nil && err == nil {
		err = werr
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if herr := <-httpDone; !errors.Is(herr, http.ErrServerClosed) && err == nil {
		err = herr
	}
	return err
}
