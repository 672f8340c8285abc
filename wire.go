package garou

import "time"

// The wire types: what the server sends, field for field as PROTOCOL.md
// §6 specifies it. They are apart from the public ChatMessage and User so
// that renaming a Go field never changes the protocol; every server frame
// is built by one of the constructors below.

// wireUser is a user on the wire (PROTOCOL.md §4).
type wireUser struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	JoinedAt time.Time `json:"joined_at,omitzero"`
}

// reply is every frame the server sends.
type reply struct {
	Type    string     `json:"type"`
	Room    string     `json:"room,omitempty"`
	Seq     uint64     `json:"seq,omitempty"`
	ID      string     `json:"id,omitempty"`
	From    wireUser   `json:"from,omitzero"`
	To      string     `json:"to,omitempty"`
	Text    string     `json:"text,omitempty"`
	User    wireUser   `json:"user,omitzero"`
	Users   []wireUser `json:"users,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Code    string     `json:"code,omitempty"`
	GapFrom uint64     `json:"from_seq,omitempty"`
	GapTo   uint64     `json:"to_seq,omitempty"`
	Empty   bool       `json:"empty,omitempty"` // a gap of numbers that hold no text
	Time    time.Time  `json:"time,omitzero"`
	Ref     uint64     `json:"ref,omitempty"`
	// Session is the token to resume with, in "welcome".
	Session string `json:"session,omitempty"`
	// Server identifies the server's run, in "welcome": a client resuming
	// on another run (the server restarted) cannot resume by number.
	Server  string `json:"server,omitempty"`
	MaxSize int    `json:"max_size,omitempty"`
	// LastSeq is a room's latest sequence number, in "joined".
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Close is the close code that follows a "bye".
	Close CloseCode `json:"close,omitempty"`
	// Count is the number of users online, in "welcome" and a "users"
	// page; of members, in "joined", a "members" page and "presence".
	Count int `json:"count,omitempty"`
	// Next is the cursor of a user list's next page; "" on the last.
	Next string `json:"next,omitempty"`
	// PresenceSeq numbers a room's joins and leaves: in "joined", the
	// last the reply includes; in "presence", the last of its changes.
	PresenceSeq uint64 `json:"presence_seq,omitempty"`
	// Changes are the joins and leaves of a "presence" frame, in order.
	Changes []wireChange `json:"changes,omitempty"`
}

// wireChange is one join or leave of a "presence" frame.
type wireChange struct {
	Op     string   `json:"op"` // "join" or "leave"
	User   wireUser `json:"user"`
	Reason string   `json:"reason,omitempty"`
	// Seq is the change's own number, when the numbers of the room's
	// changes are not dense (servers sharing presence through a broker).
	Seq uint64 `json:"seq,omitempty"`
}

// delta is what the change does to the member count: 0 for an op this
// client does not know, which it skips.
func (w *wireChange) delta() int {
	switch MessageType(w.Op) {
	case TypeJoin:
		return 1
	case TypeLeave:
		return -1
	}
	return 0
}

// page is the user list of a joined reply or a users page.
func (r *reply) page() Page {
	return Page{Users: fromWireList(r.Users), Count: r.Count, Next: r.Next}
}

// Server frame types that never reach Receive; the others are the
// MessageType constants.
const (
	frameWelcome  = "welcome"
	frameJoined   = "joined"
	frameAck      = "ack"
	framePresence = "presence"
)

func toWire(u *User) wireUser {
	if u == nil {
		return wireUser{}
	}
	return wireUser{ID: u.ID, Name: u.Name, JoinedAt: u.JoinedAt}
}

// sender is a user as the From of a text or direct message: ID and name.
func sender(u *User) wireUser {
	if u == nil {
		return wireUser{}
	}
	return wireUser{ID: u.ID, Name: u.Name}
}

func toWireList(users []User) []wireUser {
	out := make([]wireUser, len(users))
	for i := range users {
		out[i] = toWire(&users[i])
	}
	return out
}

// welcomeFrame welcomes u; online is the number of users online.
func welcomeFrame(u *User, online int, session, server string, maxSize int) reply {
	return reply{Type: frameWelcome, User: toWire(u), Count: online, Session: session, Server: server, MaxSize: maxSize}
}

// joinedFrame answers a join with the room's first page of members, its
// member count, and the numbers of its latest text and presence change.
func joinedFrame(ref uint64, room string, page []User, next string, count int, lastSeq, pseq uint64) reply {
	return reply{Type: frameJoined, Ref: ref, Room: room, Users: toWireList(page), Next: next, Count: count,
		LastSeq: lastSeq, PresenceSeq: pseq}
}

// usersFrame answers "users" (room "") or "members" with a page.
func usersFrame(ref uint64, room string, page []User, next string, count int) reply {
	return reply{Type: frameUsers, Ref: ref, Room: room, Users: toWireList(page), Next: next, Count: count}
}

// presenceFrame tells a room's joins and leaves up to pseq, or, with no
// changes, only its member count.
func presenceFrame(room string, pseq uint64, count int, changes []presenceChange, t time.Time) reply {
	r := reply{Type: framePresence, Room: room, PresenceSeq: pseq, Count: count, Time: t}
	if len(changes) > 0 {
		r.Changes = make([]wireChange, len(changes))
		for i := range changes {
			ch := &changes[i]
			w := &r.Changes[i]
			w.User = toWire(&ch.user)
			w.Seq = ch.seq
			if ch.leave {
				w.Op, w.Reason = string(TypeLeave), ch.reason
			} else {
				w.Op = string(TypeJoin)
			}
		}
	}
	return r
}

// ackText acknowledges a sequenced text.
func ackText(ref uint64, room string, seq uint64, id string) reply {
	return reply{Type: frameAck, Ref: ref, Room: room, Seq: seq, ID: id}
}

// ackDirect acknowledges a delivered direct message.
func ackDirect(ref uint64, id, to string) reply {
	return reply{Type: frameAck, Ref: ref, ID: id, To: to}
}

// ackLeave acknowledges a leave.
func ackLeave(ref uint64, room string) reply {
	return reply{Type: frameAck, Ref: ref, Room: room}
}

// textFrame is a text said in a room, or a direct message.
func textFrame(m *ChatMessage) reply {
	return reply{Type: string(m.Type), Room: m.Room, Seq: m.Seq, ID: m.ID, From: sender(m.From), To: m.To, Text: m.Text, Time: m.Time}
}

// typingFrame tells a room's members that u is typing.
func typingFrame(room string, u *User) reply {
	return reply{Type: string(TypeTyping), Room: room, From: sender(u)}
}

// gapFrame tells that the texts from to to of room are lost; to is 0 when
// the end is unknown.
func gapFrame(room string, from, to uint64) reply {
	return reply{Type: string(TypeGap), Room: room, GapFrom: from, GapTo: to}
}

// emptyFrame tells that the numbers from to to of room hold no text (a
// broker gave them up): nothing was missed.
func emptyFrame(room string, from, to uint64) reply {
	return reply{Type: string(TypeGap), Room: room, GapFrom: from, GapTo: to, Empty: true}
}

// errorFrame refuses the request ref (0: none), about room when it is
// not "".
func errorFrame(ref uint64, room string, e *Error) reply {
	return reply{Type: string(TypeError), Ref: ref, Room: room, Code: string(e.Code), Text: e.Text}
}

// byeFrame is the server's last frame before it closes with code; its
// "code" is the close code's name.
func byeFrame(code CloseCode, text string) reply {
	r := reply{Type: frameBye, Close: code, Text: text}
	if code != CloseNormal {
		r.Code = code.String()
	}
	return r
}

// message is what a client's Receive returns for a frame.
func (r *reply) message() ChatMessage {
	m := ChatMessage{Type: MessageType(r.Type), Room: r.Room, Seq: r.Seq, ID: r.ID, To: r.To, Text: r.Text,
		Reason: r.Reason, Code: ErrorCode(r.Code), GapFrom: r.GapFrom, GapTo: r.GapTo, Time: r.Time}
	if r.From != (wireUser{}) {
		m.From = r.From.user()
	}
	if r.User != (wireUser{}) {
		m.User = r.User.user()
	}
	return m
}

func (w wireUser) user() *User { return &User{ID: w.ID, Name: w.Name, JoinedAt: w.JoinedAt} }

func fromWireList(ws []wireUser) []User {
	if ws == nil {
		return nil
	}
	out := make([]User, len(ws))
	for i, w := range ws {
		out[i] = *w.user()
	}
	return out
}
