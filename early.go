package garou

// Early replay: what a resuming client missed, sent before its handshake
// completes.
//
// A client that resumes with 0-RTT sends its hello in its first flight, and
// the server reads it half a round trip later. Acting on it then would be
// unsafe (0-RTT data can be replayed), so the server registers the session
// and joins its rooms only once the handshake completes, a full round trip
// later, and the missed texts would follow the welcome. What is safe before
// that is to read: the texts after the hello's "since" in the rooms the
// session's live connection is in, which the holder of the session token
// may read anyway, sent on the room streams (0.5-RTT data, which only the
// holder of the TLS session's keys can decrypt, and which the server's
// anti-amplification limit bounds). A replayed hello gets nothing it can
// read and changes nothing. Once the handshake completes, the hello is
// handled as ever, each room's join resuming after the last text sent
// early, on the same stream.

// earlyBudget bounds what a connection sends early, in bytes: the rest of
// the missed texts follow the join's replay, paced by the client's reading.
const earlyBudget = 64 << 10

// replayEarly sends the texts a resuming hello missed, before the
// handshake completes, in the rooms its session's connection is in (see
// above), and returns the last sequence number sent in each room. It
// changes nothing outside c.
func (c *conn) replayEarly(req request) map[string]uint64 {
	if req.Session == "" || req.Rooms == nil || req.Server != c.s.epoch() {
		return nil
	}
	c.s.mu.Lock()
	old, t, ok := c.s.sessionLocked(req.Session)
	if ok && old != nil && !c.s.holdsLocked(old, req.Session, t) {
		old = nil // a token too old to resume it (see register)
	}
	c.s.mu.Unlock()
	if !ok || old == nil || old.ending() {
		return nil
	}
	maxSize := DefaultMaxMessageSize
	if req.MaxSize >= MinMessageSize {
		maxSize = req.MaxSize
	}
	sent := make(map[string]uint64)
	budget := earlyBudget
	for _, spec := range *req.Rooms {
		name := orDefault(spec.Room, DefaultRoom)
		if spec.Since == nil || checkSince(spec.Since) != nil || ValidateRoom(name) != nil {
			continue
		}
		if _, done := sent[name]; done || old.room(name) == nil {
			continue // not a room the session is in
		}
		// Only what the room has delivered: a store may hold a text not
		// yet delivered, or one that failed behind another (AppendStarter)
		// whose number the next text takes.
		r := c.s.lookupRoom(name)
		if r == nil {
			continue
		}
		r.mu.Lock()
		upto := r.seq
		r.mu.Unlock()
		msgs, oldest, err := c.s.cfg.history.After(c.qc.Context(), name, *spec.Since)
		for len(msgs) > 0 && msgs[len(msgs)-1].Seq > upto {
			msgs = msgs[:len(msgs)-1]
		}
		if err != nil || len(msgs) == 0 || oldest > *spec.Since+1 {
			continue // nothing missed, or a gap: the join tells it
		}
		var l *lane
		for _, m := range msgs {
			f, err := encodeTextFrame(&m)
			if err != nil || len(f)-frameHeaderLen > maxSize || len(f) > budget {
				break
			}
			if l == nil {
				l = c.earlyLane(name)
			}
			if !l.enqueue(f) {
				break
			}
			budget -= len(f)
			sent[name] = m.Seq
		}
		if budget < MinMessageSize {
			break
		}
	}
	if len(sent) > 0 {
		c.s.stats.earlyReplays.Add(1)
	}
	return sent
}

// earlyLane opens the lane of a room's stream before c joins the room,
// for its early replay; the join then continues on it.
func (c *conn) earlyLane(room string) *lane {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := newLane(c, room, newRoomQueue(c.budget, true))
	l.early = true
	c.lanes[room] = l
	return l
}

// resumeAfterEarly moves each room's "since" past what replayEarly sent.
func resumeAfterEarly(rooms []joinSpec, sent map[string]uint64) {
	for i, spec := range rooms {
		if last, ok := sent[orDefault(spec.Room, DefaultRoom)]; ok && spec.Since != nil && *spec.Since < last {
			rooms[i].Since = &last
		}
	}
}

// closeEarlyLane ends the early lane of a room c did not join after all.
func (c *conn) closeEarlyLane(room string) {
	c.mu.Lock()
	l := c.lanes[room]
	if l == nil || !l.early {
		c.mu.Unlock()
		return
	}
	delete(c.lanes, room)
	c.mu.Unlock()
	l.q.close(nil)
}
