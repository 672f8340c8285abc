package garou

import (
	"context"
	"net"
)

// Hello is what the authenticator sees of a connecting client.
type Hello struct {
	Name       string
	Token      string
	RemoteAddr net.Addr
}

// Identity is who the authenticator says a connecting user is.
type Identity struct {
	// ID is the user's stable ID in the host's own terms (an account or
	// player ID), at most 128 bytes. Empty: the server assigns an ID that
	// lasts the session. Only one connection per ID is online: a second
	// hello with an ID already online is refused as the name is
	// ([CloseNameTaken]) unless it resumes that session.
	ID string
	// Name is the name the user has, which must pass [ValidateName] and
	// be free. Empty: the name of the hello.
	Name string
	// Data is the host's own data about the user (a player record, say).
	// The server keeps it in [User.Data] for every later hook and for
	// Server.Users and Server.Members; it is never sent to clients.
	Data any
}

// AuthFunc decides whether a client may connect and who it is. It returns
// the user's [Identity], or an error to refuse: the client is told the
// reason given to [Refuse], or a generic one for other errors (which are
// logged), and the connection ends with [CloseUnauthorized]. ctx ends with
// the handshake deadline. It runs on the connecting client's own goroutine.
type AuthFunc func(ctx context.Context, h Hello) (Identity, error)

// Incoming is a text or direct message as the message filter sees it.
type Incoming struct {
	From User
	// Room is the room of a text; empty for a direct message.
	Room string
	// To is the recipient's name of a direct message; empty for a text.
	To   string
	Text string
}

// MessageFunc passes (return m.Text), rewrites (return another text) or
// rejects (return an error, best made with [Refuse]) a text or direct
// message before it is sequenced. It runs on the sender's own goroutine, so
// a slow filter delays only that sender.
type MessageFunc func(ctx context.Context, m Incoming) (text string, err error)

// JoinFunc is asked before u joins room; an error refuses the join. It runs
// on the joining user's own goroutine. A client resuming its session asks
// again for each room it takes back from its lost connection, which runs
// no LeaveFunc for those rooms.
type JoinFunc func(ctx context.Context, u User, room string) error

// LeaveFunc is told after u left room, with the leave's reason. It runs on
// the leaving user's own goroutine, after the leave was broadcast. It has
// no context: it must return promptly, since Server.Close waits for it.
type LeaveFunc func(u User, room, reason string)

// RoomInfo describes a room, as Server.Rooms lists it.
type RoomInfo struct {
	Name    string
	Members int
	// LastSeq is the sequence number of the room's latest text.
	LastSeq uint64
}

// maxIdentityID bounds Identity.ID, in bytes.
const maxIdentityID = 128
