// Package garou implements real-time chat over QUIC: an embeddable server,
// a client, and the JSON wire protocol between them (see PROTOCOL.md).
//
// The entry points are:
//
//   - [NewServer] builds a [Server]; [Server.ListenAndServe] or [Server.Serve]
//     runs it until its context ends or [Server.Shutdown] (both graceful), or
//     [Server.Close] (at once).
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
// are per room. Joins and leaves are gathered for a short interval and told
// in one frame per room ([WithPresenceInterval]); a room larger than
// [WithPresenceLimit] is told its member count instead of names, and member
// lists come a [Page] at a time. The server gives every text of a room the next sequence
// number of that room and delivers the room's events to every member in one
// order, the same for all members; the sender receives its own texts too, so
// every member sees the same sequence. The server keeps the last messages of
// each room ([WithHistorySize]); a client that loses its connection
// reconnects by itself, rejoins its rooms and receives exactly the messages
// it missed, once each and in order, or a [TypeGap] notice when they are no
// longer kept. A replay is sent as the client reads it, however large; the
// history can be kept elsewhere with [WithHistoryStore].
//
// # QUIC
//
// A client keeps its connection when its address changes: [Client.Migrate]
// moves it to a new socket (a phone leaving Wi-Fi), and a NAT rebinding
// needs nothing. [Client.Typing] signals travel as QUIC datagrams, never
// behind texts. The server takes a reconnect's hello in 0-RTT and acts on
// it only once the handshake completes; the client sends it so with
// [WithZeroRTT]. [Server.Stats] reports what an operator watches.
//
// # Hooks
//
// A host program decides who may connect, who they are and what may be
// said with [WithAuthenticator] (which returns an [Identity]: a stable user
// ID, a name, and data of the host's that every later hook receives in
// [User.Data]), [WithMessageFilter], [WithJoinHook] and [WithLeaveHook],
// and speaks itself with [Server.Publish] and [Server.Kick]. Hooks run on
// the goroutine that reads the connection of the user they are about,
// never on a shared path: a slow hook delays only that user.
//
// # Errors
//
// Sentinel errors (ErrX) are compared with [errors.Is]. A request the
// server refused is an [*Error] carrying an [ErrorCode]; the end of a
// connection is a [*CloseError] carrying a [CloseCode]. Both are inspected
// with [errors.As]; [CloseCodeOf] is a shortcut. Close codes come in two
// ranges: [CloseCode.Reconnect] reports the codes after which a client
// reconnects and resumes (the server shut down, was full, or failed); the
// others are final (a bad or taken name, a refusal, a kick).
package garou

import "time"

// DefaultRoom is the room every client is in unless it names others.
const DefaultRoom = "lobby"

// ALPN is the TLS application protocol Garou negotiates; it carries the
// protocol version.
const ALPN = "garou/4"

// User is a connected user as the server sees it.
type User struct {
	// ID is the user's stable ID: the one the authenticator gave
	// ([Identity]), or one the server assigned, which stays the same across
	// a resumed session.
	ID string
	// Name is unique among online users.
	Name string
	// JoinedAt is when the user connected. It is zero in the From of
	// texts and direct messages, which carry only ID and Name.
	JoinedAt time.Time
	// Data is the host's own data about the user, as the authenticator
	// returned it in [Identity]. The server hands it to hooks and returns
	// it from Server.Users, Server.Members and in the From of
	// Server-side messages; it never goes on the wire, so clients see nil.
	Data any
}

// MessageType says what a [ChatMessage] is.
type MessageType string

// The message types a client receives.
const (
	// TypeText is a text said in a room (Room, Seq, ID, From, Text, Time).
	TypeText MessageType = "text"
	// TypeDirect is a direct message to this user (ID, From, To, Text, Time).
	TypeDirect MessageType = "direct"
	// TypeJoin tells that User joined Room; Count is the room's members
	// after it.
	TypeJoin MessageType = "join"
	// TypeLeave tells that User left Room; Reason says why; Count is the
	// room's members after it.
	TypeLeave MessageType = "leave"
	// TypePresence tells that Room's member count is now Count, without
	// who joined and left: the server names them only in rooms within its
	// presence limit (see WithPresenceLimit). Client.Members lists them.
	TypePresence MessageType = "presence"
	// TypeError is an error from the server not tied to a request (Code,
	// Text, and Room when it is about a room): a room of the hello that
	// could not be joined, or a message over this client's size limit.
	TypeError MessageType = "error"
	// TypeGap says that the texts of Room numbered GapFrom to GapTo were
	// missed and are no longer kept (GapTo is 0 when the end is unknown,
	// after the server lost its history). Numbers that hold no text (on
	// servers sharing a broker, rarely) are not told: Seq then goes up
	// by more than one with nothing missed.
	TypeGap MessageType = "gap"
	// TypeTyping says that From is typing in Room. It is a signal, not a
	// message: not sequenced, not kept, not replayed, possibly lost. Show
	// it for a few seconds (TypingTimeout) unless another renews it.
	TypeTyping MessageType = "typing"
)

// TypingTimeout is how long a TypeTyping signal holds: a client typing
// without pause renews it (Client.Typing sends at most one every
// TypingTimeout/2 per room), so a signal older than this is stale.
const TypingTimeout = 4 * time.Second

// PageSize is the most users a page of a user list holds: the first page
// of a room's members in Client.Join, and each page of Client.Members and
// Client.Users.
const PageSize = 100

// A Page is one page of a user list, in the order of user IDs. Count is
// the number of users in the whole list when the page was made; Next is
// the cursor that asks for the next page, "" on the last. Users come and
// go between pages: a user who joins after the cursor passed their place
// is not listed, one who left is not either.
type Page struct {
	Users []User
	Count int
	Next  string
}

// ChatMessage is one message from the server. Which fields are set depends
// on Type. It is not the wire form: PROTOCOL.md specifies that.
type ChatMessage struct {
	Type MessageType
	// Room is the room a text, join, leave, gap or error belongs to.
	Room string
	// Seq is the room's sequence number of a text (1, 2, 3, ... within a
	// room's lifetime; it never goes back while the server runs). For a
	// TypeJoin or TypeLeave it is the change's presence number
	// (presence_seq: increasing; on servers sharing presence through a
	// broker, the same on every server, and not dense).
	Seq uint64
	// ID is the server-assigned message ID.
	ID string
	// From is the sender, stamped by the server; nil for a text the
	// server published itself.
	From *User
	// To is the recipient's name, on direct messages.
	To string
	// Text is the text said, or the error's description.
	Text string
	// User is who joined or left.
	User *User
	// Reason says why a user left: "quit", "left", "timeout", "lost",
	// "kicked", "slow", "flooding", "shutdown", "error", "reconnected"
	// (PROTOCOL.md lists when each is given).
	Reason string
	// Count is the number of members of Room after a join, a leave or a
	// presence message.
	Count int
	// Code is the error code of an error message.
	Code ErrorCode
	// GapFrom and GapTo bound a gap (inclusive).
	GapFrom uint64
	GapTo   uint64
	// Time is when the server accepted the message.
	Time time.Time
	// SenderKey is the server's own, for its HistoryStore: on a text of a
	// server with a data directory (WithDataDir) whose sender gave an
	// idempotency key, its sender's session and that key, opaque. A store
	// that keeps texts across restarts keeps it and returns it from After,
	// so that a sender whose session the restarted server restores, and
	// which sends the text again (its acknowledgement was lost), has it
	// acknowledged as it was rather than sequenced twice. It is never sent
	// to clients, and empty elsewhere.
	SenderKey string
}
