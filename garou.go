// Package garou implements real-time chat over QUIC: an embeddable server,
// a client, and the JSON wire protocol between them (see PROTOCOL.md).
//
// The entry points are:
//
//   - [NewServer] builds a [Server]; [Server.ListenAndServe] or [Server.Serve]
//     runs it until its context ends, [Server.Shutdown] or [Server.Close].
//   - [Dial] connects a [Client], which returns once the server has welcomed
//     it; [Client.Send] speaks, [Client.Receive] listens.
//
// Both are configured with functional options ([ServerOption], [ClientOption]);
// every option's documentation states its default. Options shared by both
// sides, such as [WithMaxMessageSize] and [WithTLSConfig], satisfy both
// interfaces.
//
// # Rooms, order and history
//
// Every client is in the room [DefaultRoom] unless it asks otherwise, and may
// join more rooms with [Client.Join]. Texts, joins, leaves and member lists
// are per room. The server gives every text of a room the next sequence
// number of that room and delivers the room's events to every member in one
// order, the same for all members; the sender receives its own texts too, so
// every member sees the same sequence. The server keeps the last messages of
// each room ([WithHistorySize]); a client that loses its connection
// reconnects by itself, rejoins its rooms and receives exactly the messages
// it missed, once each and in order, or a [TypeGap] notice when they are no
// longer kept. A replay is sent as the client reads it, however large; the
// history can be kept elsewhere with [WithHistoryStore].
//
// # Hooks
//
// A host program decides who may connect and what may be said with
// [WithAuthenticator], [WithMessageFilter], [WithJoinHook] and
// [WithLeaveHook], and speaks itself with [Server.Publish] and [Server.Kick].
// Hooks run on the goroutine that reads the connection of the user they are
// about, never on a shared path: a slow hook delays only that user.
//
// # Errors
//
// Sentinel errors (ErrX) are compared with [errors.Is]. A refusal or an error
// message from the server is an [*Error] carrying an [ErrorCode]; the end of
// a connection is a [*CloseError] carrying a [CloseCode]. Both are inspected
// with [errors.As]; [CloseCodeOf] is a shortcut.
package garou

import "time"

// DefaultRoom is the room every client is in unless it names others.
const DefaultRoom = "lobby"

// ALPN is the TLS application protocol Garou negotiates; it carries the
// protocol version.
const ALPN = "garou/1"

// User is a connected user as the server sees it.
type User struct {
	// ID is assigned by the server and stays the same across a resumed
	// session.
	ID string `json:"id"`
	// Name is unique among online users.
	Name string `json:"name"`
	// JoinedAt is when the user connected. It is zero in the From of
	// texts and direct messages, which carry only ID and Name.
	JoinedAt time.Time `json:"joined_at,omitzero"`
}

// MessageType says what a [ChatMessage] is.
type MessageType string

// The message types a client receives.
const (
	// TypeText is a text said in a room (Room, Seq, ID, From, Text, Time).
	TypeText MessageType = "text"
	// TypeDirect is a direct message to this user (ID, From, To, Text, Time).
	TypeDirect MessageType = "direct"
	// TypeJoin tells that User joined Room.
	TypeJoin MessageType = "join"
	// TypeLeave tells that User left Room; Reason says why.
	TypeLeave MessageType = "leave"
	// TypeUsers carries a user list (Users), in answer to a request.
	TypeUsers MessageType = "users"
	// TypeError is an error from the server (Code, Text).
	TypeError MessageType = "error"
	// TypeGap says that the texts of Room numbered From to To were missed
	// and are no longer kept (To is 0 when the end is unknown, after the
	// server lost its history).
	TypeGap MessageType = "gap"
)

// ChatMessage is one message from the server. Which fields are set depends
// on Type; the JSON form is the wire form documented in PROTOCOL.md.
type ChatMessage struct {
	Type MessageType `json:"type"`
	// Room is the room a text, join, leave, gap or member list belongs to.
	Room string `json:"room,omitempty"`
	// Seq is the room's sequence number of a text (1, 2, 3, ... within a
	// room's lifetime; it never goes back while the server runs).
	Seq uint64 `json:"seq,omitempty"`
	// ID is the server-assigned message ID.
	ID string `json:"id,omitempty"`
	// From is the sender, stamped by the server.
	From *User `json:"from,omitempty"`
	// To is the recipient's name, on direct messages.
	To string `json:"to,omitempty"`
	// Text is the text said, or the error's description.
	Text string `json:"text,omitempty"`
	// User is who joined or left.
	User *User `json:"user,omitempty"`
	// Users is a user list.
	Users []User `json:"users,omitempty"`
	// Reason says why a user left: "quit", "left", "timeout", "lost",
	// "kicked", "slow", "flooding", "shutdown", "error", "reconnected"
	// (PROTOCOL.md lists when each is given).
	Reason string `json:"reason,omitempty"`
	// Code is the error code of an error message.
	Code ErrorCode `json:"code,omitempty"`
	// GapFrom and GapTo bound a gap (inclusive).
	GapFrom uint64 `json:"from_seq,omitempty"`
	GapTo   uint64 `json:"to_seq,omitempty"`
	// Time is when the server accepted the message.
	Time time.Time `json:"time,omitzero"`
}
