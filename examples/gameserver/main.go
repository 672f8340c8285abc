// Command gameserver embeds Garou the way a game server would: one room per
// match, players admitted by token into their own match only, a word
// filter, and announcements from the server.
//
//	go run ./examples/gameserver [-addr 127.0.0.1:4434] [-players alice:1,bob:1,carol:2]
//
// It prints, for each player, the token it is admitted with and the
// command that connects the interactive client as that player, e.g.
//
//	player alice match match-1 token TOKEN
//	  go run ./examples/client -addr 127.0.0.1:4434 -fingerprint FP -name alice -token TOKEN -room match-1
//
// Ctrl-C or SIGTERM (or the end of -duration) shuts it down gracefully.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/garou-chat/garou"
)

// player is who a token admits, and to which match.
type player struct {
	name  string
	match string
}

// badWords are masked by the filter; "cheat" links are refused outright.
var (
	badWords = regexp.MustCompile(`(?i)\b(noob|trash|idiot)\b`)
	cheats   = regexp.MustCompile(`(?i)cheat\w*\.(com|net|io)`)
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4434", "UDP address to listen on")
	players := flag.String("players", "alice:1,bob:1,carol:2,dave:2", "comma-separated name:match pairs to issue tokens for")
	every := flag.Duration("announce", 20*time.Second, "interval between server announcements in each match")
	duration := flag.Duration("duration", 0, "stop after this long (0: run until interrupted)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	tokens, err := issueTokens(*players)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gameserver:", err)
		os.Exit(2)
	}
	srv, err := garou.NewServer(
		garou.WithLogger(log),
		garou.WithAuthenticator(func(_ context.Context, h garou.Hello) (garou.Identity, error) {
			p, ok := tokens[h.Token]
			if !ok {
				return garou.Identity{}, garou.Refuse("unknown token")
			}
			// The token decides who plays, whatever name was asked.
			return garou.Identity{ID: "player:" + p.name, Name: p.name, Data: p}, nil
		}),
		garou.WithJoinHook(func(_ context.Context, u garou.User, room string) error {
			if p, ok := u.Data.(player); ok && p.match == room {
				return nil
			}
			return garou.Refuse("you play in another match")
		}),
		garou.WithMessageFilter(func(_ context.Context, m garou.Incoming) (string, error) {
			if cheats.MatchString(m.Text) {
				return "", garou.Refuse("links to cheats are not allowed")
			}
			return badWords.ReplaceAllStringFunc(m.Text, func(w string) string { return strings.Repeat("*", len(w)) }), nil
		}),
		garou.WithLeaveHook(func(u garou.User, room, reason string) {
			log.Info("player left", "player", u.Name, "match", room, "reason", reason)
		}),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gameserver:", err)
		os.Exit(2)
	}
	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gameserver:", err)
		os.Exit(1)
	}
	defer pc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	fmt.Printf("gameserver listening on %s\nfingerprint %s\n", pc.LocalAddr(), srv.Fingerprint())
	for _, tok := range sortedTokens(tokens) {
		p := tokens[tok]
		fmt.Printf("player %s match %s token %s\n", p.name, p.match, tok)
		fmt.Printf("  go run ./examples/client -addr %s -fingerprint %s -name %s -token %s -room %s\n",
			pc.LocalAddr(), srv.Fingerprint(), p.name, tok, p.match)
	}
	fmt.Println("ready")

	// Ending ctx shuts the server down gracefully, and stops the
	// announcements.
	go announce(ctx, srv, *every)
	if err := srv.Serve(ctx, pc); err != nil {
		fmt.Fprintln(os.Stderr, "gameserver:", err)
		os.Exit(1)
	}
}

// announce says the round in every match that has players, until ctx ends.
func announce(ctx context.Context, srv *garou.Server, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range srv.Rooms() {
			_, err := srv.Publish(ctx, r.Name, fmt.Sprintf("round %d starts: %d players", round, r.Members))
			if err != nil && !errors.Is(err, garou.ErrNoSuchRoom) {
				return
			}
		}
	}
}

func issueTokens(spec string) (map[string]player, error) {
	tokens := map[string]player{}
	for pair := range strings.SplitSeq(spec, ",") {
		name, match, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok || garou.ValidateName(name) != nil || match == "" {
			return nil, fmt.Errorf("bad player %q: want name:match", pair)
		}
		var b [12]byte
		_, _ = rand.Read(b[:])
		tokens[hex.EncodeToString(b[:])] = player{name: name, match: "match-" + match}
	}
	return tokens, nil
}

func sortedTokens(tokens map[string]player) []string {
	keys := make([]string, 0, len(tokens))
	for k := range tokens {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(tokens[a].name, tokens[b].name) })
	return keys
}
