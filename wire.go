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
	// Truncated says a user list was cut to fit the client's size limit.
	Truncated bool `json:"truncated,omitempty"`
}

// Server frame types that never reach Receive; the others are the
// MessageType constants.
const (
	frameWelcome = "welcome"
	frameJoined  = "joined"
	frameAck     = "ack"
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

func welcomeFrame(u *User, users []User, session, server string, maxSize int) reply {
	return reply{Type: frameWelcome, User: toWire(u), Users: toWireList(users), Session: session, Server: server, MaxSize: maxSize}
}

func joinedFrame(ref uint64, room string, members []User, lastSeq uint64) reply {
	return reply{Type: frameJoined, Ref: ref, Room: room, Users: toWireList(members), LastSeq: lastSeq}
}

func usersFrame(ref uint64, room string, users []User) reply {
	return reply{Type: frameUsers, Ref: ref, Room: room, Users: toWireList(users)}
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

func joinFrame(room string, u *User, t time.Time) reply {
	return reply{Type: string(TypeJoin), Room: room, User: toWire(u), Time: t}
}

func leaveFrame(room string, u *User, reason string, t time.Time) reply {
	return reply{Type: string(TypeLeave), Room: room, User: toWire(u), Reason: reason, Time: t}
}

// gapFrame tells that the texts from to to of room are lost; to is 0 when
// the end is unknown.
func gapFrame(room string, from, to uint64) reply {
	return reply{Type: string(TypeGap), Room: room, GapFrom: from, GapTo: to}
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
