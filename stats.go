package garou

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a server's state and counters, for an operator's
// dashboards and alerts. Counters count from the server's start and never
// go down; the others are the state at the call.
type Stats struct {
	// Connections are the QUIC connections open, Handshakes those of
	// them not yet welcomed, Users the welcomed users.
	Connections, Handshakes, Users int
	// Rooms are the rooms with members; Members the memberships, summed
	// over rooms.
	Rooms, Members int
	// QueuedBytes is what waits in every connection's send queue, and
	// MaxQueuedBytes the fullest queue's share (a client that reads too
	// slowly is cut at WithSendQueueBytes).
	QueuedBytes, MaxQueuedBytes int

	// Welcomes counts accepted hellos; Resumes those that resumed a
	// session, still held or restored from its token (WithDataDir);
	// EarlyHellos those that came in 0-RTT, and EarlyReplays those of
	// them that were sent missed texts before their handshake completed.
	Welcomes, Resumes, EarlyHellos, EarlyReplays uint64
	// Texts counts the texts sequenced (the server's own included);
	// Deliveries the texts queued to members, one per member; Directs the
	// direct messages delivered.
	Texts, Deliveries, Directs uint64
	// BytesIn and BytesOut count the frame bytes read from and written to
	// clients' streams, length prefixes included.
	BytesIn, BytesOut uint64
	// Refusals counts the error frames that refused a request or a bad
	// frame, by code.
	Refusals map[ErrorCode]uint64
	// Closes counts the connections the server ended, by close code:
	// CloseSlowConsumer counts the slow consumers cut, CloseNormal the
	// clients that said bye.
	Closes map[CloseCode]uint64
	// HistoryAppends counts the HistoryStore's Appends, HistoryErrors
	// those that failed, and HistoryTime is the time spent in them.
	HistoryAppends, HistoryErrors uint64
	HistoryTime                   time.Duration
}

// counters are the server's running counts behind Stats: atomics on the
// paths every text takes, a lock for the rarer events counted by code.
type counters struct {
	welcomes, resumes, early, earlyReplays   atomic.Uint64
	texts, deliveries, directs               atomic.Uint64
	bytesIn, bytesOut                        atomic.Uint64
	historyAppends, historyErrors, historyNs atomic.Uint64

	mu       sync.Mutex
	refusals map[ErrorCode]uint64
	closes   map[CloseCode]uint64
}

func (k *counters) refused(code ErrorCode) {
	k.mu.Lock()
	if k.refusals == nil {
		k.refusals = make(map[ErrorCode]uint64)
	}
	k.refusals[code]++
	k.mu.Unlock()
}

func (k *counters) closed(code CloseCode) {
	k.mu.Lock()
	if k.closes == nil {
		k.closes = make(map[CloseCode]uint64)
	}
	k.closes[code]++
	k.mu.Unlock()
}

// history counts one HistoryStore Append that took d and failed if err.
func (k *counters) history(d time.Duration, err error) {
	k.historyAppends.Add(1)
	k.historyNs.Add(uint64(d))
	if err != nil {
		k.historyErrors.Add(1)
	}
}

// Stats returns a snapshot of the server's state and counters. It is safe
// to call from any goroutine, as often as a metrics scraper does: it takes
// each connection's and room's lock briefly, so it costs O(connections +
// rooms), about a millisecond for 10,000 connections.
func (s *Server) Stats() Stats {
	k := &s.stats
	st := Stats{
		Welcomes: k.welcomes.Load(), Resumes: k.resumes.Load(), EarlyHellos: k.early.Load(), EarlyReplays: k.earlyReplays.Load(),
		Texts: k.texts.Load(), Deliveries: k.deliveries.Load(), Directs: k.directs.Load(),
		BytesIn: k.bytesIn.Load(), BytesOut: k.bytesOut.Load(),
		HistoryAppends: k.historyAppends.Load(), HistoryErrors: k.historyErrors.Load(),
		HistoryTime: time.Duration(k.historyNs.Load()),
		Refusals:    make(map[ErrorCode]uint64), Closes: make(map[CloseCode]uint64),
	}
	k.mu.Lock()
	for c, n := range k.refusals {
		st.Refusals[c] = n
	}
	for c, n := range k.closes {
		st.Closes[c] = n
	}
	k.mu.Unlock()

	s.mu.Lock()
	st.Connections, st.Handshakes, st.Users = len(s.conns), s.handshakes, len(s.byID)
	s.mu.Unlock()
	for _, c := range s.connList() {
		q := c.budget.used()
		st.QueuedBytes += q
		st.MaxQueuedBytes = max(st.MaxQueuedBytes, q)
	}
	for _, r := range s.Rooms() {
		st.Rooms++
		st.Members += r.Members
	}
	return st
}

// logLimiter lets through at most burst log lines, then one every
// 1/perSecond, for the lines a hostile client can cause (refusals, bad
// frames): a flood must not turn into a flood of logs. It counts what it
// held back, for the next line to say.
type logLimiter struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

const (
	refusalLogsPerSecond = 10
	refusalLogBurst      = 20
)

// allow reports whether a line may be logged now, and how many were held
// back since the last one.
func (l *logLimiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.last.IsZero() {
		l.tokens = refusalLogBurst
	} else {
		l.tokens = min(refusalLogBurst, l.tokens+now.Sub(l.last).Seconds()*refusalLogsPerSecond)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// logRefusal logs a line a client's misbehaviour caused, unless too many
// such lines came lately; the next line logged says how many were not.
func (s *Server) logRefusal(log *slog.Logger, level slog.Level, msg string, args ...any) {
	ok, held := s.refusalLogs.allow()
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	log.Log(context.Background(), level, msg, args...)
}
