package garou

import (
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
)

// Sentinel errors. Compare with errors.Is.
var (
	// ErrClosed is returned by calls on a Client or Server that was closed.
	ErrClosed = errors.New("garou: closed")
	// ErrServerClosed is returned by Serve and ListenAndServe when called
	// after Shutdown or Close.
	ErrServerClosed = errors.New("garou: server closed")
	// ErrTooLarge is returned by Send when the frame would exceed the
	// maximum message size; nothing was sent.
	ErrTooLarge = errors.New("garou: message too large")
	// ErrInvalidName is returned by Dial for a name the protocol forbids
	// (empty, over 32 characters, control or invisible characters).
	ErrInvalidName = errors.New("garou: invalid name")
	// ErrInvalidRoom is returned for a room name the protocol forbids.
	ErrInvalidRoom = errors.New("garou: invalid room name")
	// ErrInvalidText is returned by Send for an empty text or one that is
	// not valid UTF-8.
	ErrInvalidText = errors.New("garou: invalid text")
	// ErrOutcomeUnknown is returned by a Send (SendTo, SendDirect) that
	// wrote its frame but stopped waiting before the server acknowledged
	// it: its context ended, or the client stopped. The text may or may
	// not have been sequenced (at most once: its idempotency key keeps the
	// server from sequencing it twice). The error also wraps the cause,
	// such as context.DeadlineExceeded or ErrClosed.
	ErrOutcomeUnknown = errors.New("garou: outcome unknown, the server may have accepted the message")
	// ErrNotSent is returned by a Send (SendTo, SendDirect) that gave up
	// before its frame was written: the server never saw the text. The
	// error also wraps the cause, such as context.DeadlineExceeded or
	// ErrClosed.
	ErrNotSent = errors.New("garou: not sent")
	// ErrNoAnswer is returned by Dial, and ends a reconnect attempt, when
	// nothing answered at the server's address within the connect timeout:
	// no server listens there, or the network drops the packets.
	ErrNoAnswer = errors.New("garou: no answer from the server")
	// ErrFingerprintMismatch is returned by Dial when the server's
	// certificate is not the one pinned with WithFingerprint.
	ErrFingerprintMismatch = errors.New("garou: server certificate fingerprint does not match the pinned one")
	// ErrInvalidOption wraps every error from validating options.
	ErrInvalidOption = errors.New("garou: invalid option")
	// ErrNoSuchUser is returned by Server.Kick for a name that is not
	// online.
	ErrNoSuchUser = errors.New("garou: no such user")
	// ErrNoSuchRoom is returned by Server.Publish for a room with no
	// members.
	ErrNoSuchRoom = errors.New("garou: no such room")
	// ErrNameTaken is returned by NameHolder.Hold for a name another
	// session holds.
	ErrNameTaken = errors.New("garou: name taken")
	// ErrUnavailable is wrapped by the error of a Broker's Publish that
	// gave up because the broker's own service was out of reach for
	// longer than it waits (a NATS outage): the text may still have been
	// kept, and a retry with its key gets it kept once. It is wrapped too
	// by a UserBroker's SendUser (and so Server.Kick) that could not reach
	// a user who may be online. The server tells the client
	// CodeUnavailable.
	ErrUnavailable = errors.New("garou: broker unavailable")
)

// ErrorCode is the machine-readable code of an "error" frame: the server
// refused one request and the connection stays open. PROTOCOL.md §10
// lists when each is sent. How a connection ends is a [CloseCode] instead;
// a few failures can happen either way and have the same name in both
// (too_large, shutdown, internal).
type ErrorCode string

// Error codes of refused requests.
const (
	CodeBadFrame     ErrorCode = "bad_frame"     // malformed JSON, an unknown field, a field of the wrong type
	CodeUnknownType  ErrorCode = "unknown_type"  // a frame type the server does not know
	CodeTooLarge     ErrorCode = "too_large"     // a text that would exceed a size limit once stamped
	CodeBadText      ErrorCode = "bad_text"      // an empty text
	CodeBadRoom      ErrorCode = "bad_room"      // an invalid room name
	CodeNotInRoom    ErrorCode = "not_in_room"   // the sender is not a member of the room
	CodeNoSuchUser   ErrorCode = "no_such_user"  // a direct message to a user who is not online
	CodeRoomLimit    ErrorCode = "room_limit"    // the client is in the maximum number of rooms
	CodeRoomFull     ErrorCode = "room_full"     // the room has the maximum number of members
	CodeRejected     ErrorCode = "rejected"      // the message filter or the join hook refused
	CodeRateLimited  ErrorCode = "rate_limited"  // the client sends faster than allowed
	CodeShutdown     ErrorCode = "shutdown"      // the server is shutting down and accepts nothing new
	CodeNotDelivered ErrorCode = "not_delivered" // a message was over this client's size limit
	CodeInternal     ErrorCode = "internal"      // the server failed; the request may be retried
	CodeUnavailable  ErrorCode = "unavailable"   // the broker, or a direct message's recipient, is out of reach for now; the text may be retried with its key, as the Go client does
)

// Error is a request refused by the server: an "error" frame.
type Error struct {
	Code ErrorCode
	Text string
}

func (e *Error) Error() string {
	if e.Text == "" {
		return "garou: " + string(e.Code)
	}
	return fmt.Sprintf("garou: %s: %s", e.Code, e.Text)
}

// maxQuoted bounds, in bytes, what an error text quotes of the client's
// input: room and user names are short, and a longer string in their place
// is not repeated at length.
const maxQuoted = 256

func notInRoom(room string) *Error {
	return &Error{Code: CodeNotInRoom, Text: "you are not in room " + truncate(room, maxQuoted)}
}

func noSuchUser(name string) *Error {
	return &Error{Code: CodeNoSuchUser, Text: "no user " + truncate(name, maxQuoted) + " is online"}
}

// Refuse returns an error with which a hook refuses, giving the reason the
// client is told. An authenticator's refusal ends the connection with
// [CloseUnauthorized]; a message filter's or join hook's refuses the
// request with [CodeRejected]. Errors not made by Refuse reach the client
// with a generic reason, so that internal details do not leak; they are
// logged.
func Refuse(reason string) error { return &refusal{reason: reason} }

type refusal struct{ reason string }

func (r *refusal) Error() string { return "garou: refused: " + r.reason }

// CloseCode is the QUIC application error code with which a Garou
// connection is closed, announced in the "bye" frame that precedes a
// graceful close. PROTOCOL.md §12 lists when each is used.
//
// The codes fall in two ranges: from 0x100 to 0x1ff the client should
// reconnect, with backoff, and resume ([CloseCode.Reconnect]); from 0x200
// to 0x2ff the failure is final and reconnecting would fail the same way.
type CloseCode uint64

// Close codes.
const (
	CloseNormal CloseCode = 0x000 // the client said bye, or closed

	// Reconnect: the client tries again, with backoff, and resumes.
	CloseServerShutdown   CloseCode = 0x100 // the server is shutting down or restarting
	CloseServerFull       CloseCode = 0x101 // connection or handshake limit reached
	CloseTooManyConns     CloseCode = 0x102 // per-address connection limit reached
	CloseSlowConsumer     CloseCode = 0x103 // the send queue passed its bound
	CloseHandshakeTimeout CloseCode = 0x104 // no hello within the deadline
	CloseInternal         CloseCode = 0x105 // the server failed

	// Final: trying again will not help.
	CloseBadName      CloseCode = 0x200 // the name breaks the name rules
	CloseNameTaken    CloseCode = 0x201 // another online user has the name
	CloseUnauthorized CloseCode = 0x202 // the authenticator refused
	CloseProtocol     CloseCode = 0x203 // a protocol violation
	CloseTooLarge     CloseCode = 0x204 // a frame over the size limit
	CloseFlooding     CloseCode = 0x205 // went on sending refused frames
	CloseKicked       CloseCode = 0x206 // the host removed the user
	CloseReplaced     CloseCode = 0x207 // the session resumed on another connection
)

// closeCodeNames are the close codes' names: the "code" of a "bye".
var closeCodeNames = map[CloseCode]string{
	CloseNormal:           "normal",
	CloseServerShutdown:   "shutdown",
	CloseServerFull:       "server_full",
	CloseTooManyConns:     "too_many_connections",
	CloseSlowConsumer:     "slow_consumer",
	CloseHandshakeTimeout: "handshake_timeout",
	CloseInternal:         "internal",
	CloseBadName:          "bad_name",
	CloseNameTaken:        "name_taken",
	CloseUnauthorized:     "unauthorized",
	CloseProtocol:         "protocol",
	CloseTooLarge:         "too_large",
	CloseFlooding:         "flooding",
	CloseKicked:           "kicked",
	CloseReplaced:         "replaced",
}

// String returns the code's name as PROTOCOL.md gives it ("name_taken").
func (c CloseCode) String() string {
	if s, ok := closeCodeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("close_code_%#x", uint64(c))
}

// Reconnect reports whether a connection closed with c is worth
// reconnecting to (the range 0x100 to 0x1ff): the server shut down, was
// full, failed, or cut a client that read too slowly. A code of an unknown
// range is taken as final.
func (c CloseCode) Reconnect() bool { return c >= 0x100 && c <= 0x1ff }

// CloseError reports how a connection ended: the close code and the reason
// sent with it. Remote is true when the peer closed the connection.
type CloseError struct {
	Code   CloseCode
	Reason string
	Remote bool
}

func (e *CloseError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by the server"
	}
	if e.Reason == "" {
		return fmt.Sprintf("garou: connection closed %s: %v", who, e.Code)
	}
	return fmt.Sprintf("garou: connection closed %s: %v: %s", who, e.Code, e.Reason)
}

// CloseCodeOf returns the close code carried by err and true, or false if
// err is not about a closed connection.
func CloseCodeOf(err error) (CloseCode, bool) {
	if ce, ok := errors.AsType[*CloseError](err); ok {
		return ce.Code, true
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return CloseCode(ae.ErrorCode), true
	}
	return 0, false
}

// closeErrorFrom turns a QUIC error into a *CloseError when it is an
// application close, and returns it unchanged otherwise.
func closeErrorFrom(err error) error {
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return &CloseError{Code: CloseCode(ae.ErrorCode), Reason: ae.ErrorMessage, Remote: ae.Remote}
	}
	return err
}
