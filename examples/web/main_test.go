package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serving is the example server, run as main runs it, until stop.
type serving struct {
	addrs
	cancel context.CancelFunc
	done   chan error
}

func serve(t *testing.T, o *options) *serving {
	t.Helper()
	o.log = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan addrs, 1)
	go func() { s.done <- run(ctx, o, func(a addrs) { ready <- a }) }()
	select {
	case s.addrs = <-ready:
	case err := <-s.done:
		cancel()
		t.Fatalf("the server did not start: %v", err)
	}
	return s
}

func (s *serving) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	require.NoError(t, <-s.done)
}

// browser starts headless Chromium, from Debian's chromium-headless-shell;
// the test is skipped where it is not installed (.ci/run installs it).
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium-headless-shell")
	if err != nil {
		t.Skip("chromium-headless-shell is not installed (apt-get install chromium-headless-shell)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(900, 600))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	require.NoError(t, chromedp.Do(bctx)) // starts the browser
	t.Cleanup(func() {
		_ = chromedp.Cancel(bctx)
		cancelBrowser()
		cancelAlloc()
	})
	return bctx
}

// tab opens a new tab on the page, for name, and waits until it is online;
// before runs first, in the blank tab.
func tab(t *testing.T, bctx context.Context, s *serving, query string, before ...chromedp.Action[chromedp.Void]) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithListener(func(ev any) {
		// The page's console and uncaught exceptions, in the test's log.
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value))
			}
			t.Logf("%s console.%s: %s", query, ev.Type, strings.Join(args, " "))
		case *runtime.EventExceptionThrown:
			t.Logf("%s exception: %s %v", query, ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception)
		}
	}))
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx)) // opens the tab
	do(t, ctx, before...)
	do(t, ctx, chromedp.Navigate("http://"+s.HTTP+"/?"+query), waitState("online"))
	return ctx
}

// do runs actions in a tab, bounded.
func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	_ = runTab(t, ctx, chromedp.Steps(actions...))
}

// runTab runs an action in a tab, bounded, and returns its value.
func runTab[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

func waitState(state string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitReady(chromedp.CSS(`body[data-state="` + state + `"]`))
}

// texts is what a page shows of room's texts: "seq:from:text", in order.
func texts(t *testing.T, ctx context.Context, room string) []string {
	t.Helper()
	return runTab(t, ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
		`[...document.querySelectorAll('#log li.text[data-room=%q]')].map(li => li.dataset.seq + ":" + li.textContent)`, room)))
}

// waitTexts waits until the page shows n texts of room.
func waitTexts(t *testing.T, ctx context.Context, room string, n int) []string {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := chromedp.Run(pctx, chromedp.Poll[chromedp.Void](fmt.Sprintf(
		`document.querySelectorAll('#log li.text[data-room=%q]').length >= %d`, room, n), chromedp.WithPollingTimeout(10*time.Second)))
	require.NoError(t, err, "waiting for %d texts in %s; the page has %q", n, room, texts(t, ctx, room))
	return texts(t, ctx, room)
}

// transport is the transport a page's connection runs on.
func transport(t *testing.T, ctx context.Context) string {
	t.Helper()
	return runTab(t, ctx, chromedp.Evaluate[string](`chat.transport`))
}

// say types text into a page's box and sends it, as a user does.
func say(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	do(t, ctx, chromedp.SendKeys(chromedp.ID("text"), text), chromedp.Click(chromedp.ID("send")))
}

// screenshot saves the page as dir/name.png.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := runTab(t, ctx, chromedp.CaptureScreenshot())
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// receiveTexts returns the next n texts a Go client receives, as the
// page shows them: "seq:from: text".
func receiveTexts(t *testing.T, ctx context.Context, c *garou.Client, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		m, err := c.Receive(ctx)
		require.NoError(t, err)
		if m.Type == garou.TypeText && m.Room == "lobby" {
			got = append(got, fmt.Sprintf("%d:%s: %s", m.Seq, m.From.Name, m.Text))
		}
	}
	return got
}

// TestBrowser: two pages in headless Chromium, one over WebTransport and
// one over WebSocket, and a Go client over QUIC chat in one room and see
// one order; typing reaches each page (as datagrams over WebTransport); a
// page joins another room; the server restarts and the pages resume, over
// the same transports, without losing a text.
func TestBrowser(t *testing.T) {
	bctx := browser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	shots, err := os.MkdirTemp("", "garou-web-screenshots-")
	require.NoError(t, err)
	t.Logf("screenshots in %s", shots)

	data := t.TempDir()
	s := serve(t, &options{http: "127.0.0.1:0", quic: "127.0.0.1:0", webTransport: "127.0.0.1:0", dataDir: data})
	alice := tab(t, bctx, s, "name=alice")
	bob := tab(t, bctx, s, "name=bob&transport=websocket")
	require.Equal(t, "webtransport", transport(t, alice))
	require.Equal(t, "websocket", transport(t, bob))
	carol, err := garou.Dial(ctx, s.QUIC, "carol", garou.WithFingerprint(s.Fingerprint), garou.WithReconnect(50),
		garou.WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond))
	require.NoError(t, err)
	defer carol.Close()

	say(t, alice, "hello from alice")
	waitTexts(t, bob, "lobby", 1)
	say(t, bob, "hi alice")
	_, err = carol.SendTo(ctx, "lobby", "and carol over QUIC")
	require.NoError(t, err)
	say(t, alice, "welcome carol")
	want := receiveTexts(t, ctx, carol, 4)
	require.Equal(t, want, waitTexts(t, alice, "lobby", 4))
	require.Equal(t, want, waitTexts(t, bob, "lobby", 4))

	// Alice types: bob sees it.
	do(t, alice, chromedp.SendKeys(chromedp.ID("text"), "typing…"))
	runTab(t, bob, chromedp.Poll[chromedp.Void](`document.getElementById("typing").textContent === "alice is typing…"`,
		chromedp.WithPollingTimeout(10*time.Second)))
	screenshot(t, bob, shots, "1-bob-sees-typing")
	// Bob types: alice sees it, from a datagram.
	do(t, bob, chromedp.SendKeys(chromedp.ID("text"), "typing…"))
	runTab(t, alice, chromedp.Poll[chromedp.Void](`document.getElementById("typing").textContent === "bob is typing…" && chat.datagrams > 0`,
		chromedp.WithPollingTimeout(10*time.Second)))
	runTab(t, bob, chromedp.Evaluate[chromedp.Void](`document.getElementById("text").value = ""`))

	// Bob joins a room from the page; carol and he chat there.
	do(t, bob, chromedp.SendKeys(chromedp.ID("newroom"), "dev"), chromedp.Click(chromedp.ID("join")),
		chromedp.WaitReady(chromedp.CSS(`nav button.room.current[data-room="dev"]`)))
	_, err = carol.Join(ctx, "dev", 0)
	require.NoError(t, err)
	seq, err := carol.SendTo(ctx, "dev", "carol in dev")
	require.NoError(t, err)
	require.Equal(t, []string{fmt.Sprintf("%d:carol: carol in dev", seq)}, waitTexts(t, bob, "dev", 1))
	screenshot(t, alice, shots, "1-alice")
	screenshot(t, bob, shots, "1-bob")

	// The server restarts, on the same addresses and data directory: the
	// pages show they are reconnecting, resume, and lose nothing said
	// meanwhile.
	s.stop(t)
	runTab(t, alice, chromedp.Poll[chromedp.Void](`document.body.dataset.state !== "online"`, chromedp.WithPollingTimeout(10*time.Second)))
	screenshot(t, alice, shots, "2-alice-reconnecting")
	s = serve(t, &options{http: s.HTTP, quic: s.QUIC, webTransport: s.WebTransport, dataDir: data})
	defer s.stop(t)
	for i := range 3 {
		_, err = carol.SendTo(ctx, "lobby", fmt.Sprintf("after the restart %d", i))
		require.NoError(t, err)
	}
	want = append(want, receiveTexts(t, ctx, carol, 3)...)
	for _, page := range []context.Context{alice, bob} {
		do(t, page, waitState("online"))
		require.Equal(t, want, waitTexts(t, page, "lobby", len(want)))
	}
	require.Equal(t, "webtransport", transport(t, alice))
	require.Equal(t, "websocket", transport(t, bob))
	do(t, bob, chromedp.Click(chromedp.CSS(`nav button.room[data-room="lobby"]`)))
	say(t, bob, "bob is back")
	require.Equal(t, "bob is back", strings.SplitN(waitTexts(t, alice, "lobby", len(want)+1)[len(want)], ": ", 2)[1])
	screenshot(t, alice, shots, "3-alice-resumed")
	screenshot(t, bob, shots, "3-bob-resumed")
}

// TestBrowserFallback: a page whose WebTransport session cannot be set up
// (here: the certificate is not the one whose hash it pins) connects over
// WebSocket instead, and keeps to it.
func TestBrowserFallback(t *testing.T) {
	bctx := browser(t)
	s := serve(t, &options{http: "127.0.0.1:0", quic: "127.0.0.1:0", webTransport: "127.0.0.1:0"})
	defer s.stop(t)
	wrongHash := func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
			const realFetch = window.fetch;
			window.fetch = async (url, opts) => {
				const rsp = await realFetch(url, opts);
				if (!String(url).endsWith("/webtransport.json")) return rsp;
				const c = await rsp.json();
				c.sha256 = "00".repeat(32);
				return new Response(JSON.stringify(c), { headers: { "Content-Type": "application/json" } });
			};`})
		return chromedp.Void{}, err
	}
	dave := tab(t, bctx, s, "name=dave", wrongHash)
	require.Equal(t, "websocket", transport(t, dave))
	require.True(t, runTab(t, dave, chromedp.Evaluate[bool](`chat.wtFailed`)))
	say(t, dave, "over WebSocket")
	waitTexts(t, dave, "lobby", 1)
}
