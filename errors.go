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
)

// ErrorCode is the machine-readable code of an error message from the
// server. The codes are listed in PROTOCOL.md.
type ErrorCode string

// Error codes sent by the server.
const (
	CodeBadFrame       ErrorCode = "bad_frame"       // malformed JSON or wrong shape
	CodeUnknownType    ErrorCode = "unknown_type"    // a frame type the server does not know
	CodeTooLarge       ErrorCode = "too_large"       // a frame over the size limit
	CodeBadName        ErrorCode = "bad_name"        // name empty, too long, or with forbidden characters
	CodeNameTaken      ErrorCode = "name_taken"      // another online user has the name
	CodeUnauthorized   ErrorCode = "unauthorized"    // the authenticator refused the hello
	CodeProtocol       ErrorCode = "protocol"        // a frame out of place (second hello, no hello, ...)
	CodeBadText        ErrorCode = "bad_text"        // an empty text
	CodeBadRoom        ErrorCode = "bad_room"        // invalid room name
	CodeNotInRoom      ErrorCode = "not_in_room"     // the sender is not a member of the room
	CodeNoSuchUser     ErrorCode = "no_such_user"    // direct message to a user who is not online
	CodeRoomLimit      ErrorCode = "room_limit"      // the client is in the maximum number of rooms
	CodeRoomFull       ErrorCode = "room_full"       // the room has the maximum number of members
	CodeRejected       ErrorCode = "rejected"        // a hook rejected the request
	CodeRateLimited    ErrorCode = "rate_limited"    // the client sends faster than allowed
	CodeShuttingDown   ErrorCode = "shutting_down"   // the server is shutting down and accepts nothing new
	CodeNotDelivered   ErrorCode = "not_delivered"   // a message was over this client's size limit
	CodeInternal       ErrorCode = "internal"        // the server failed; the request may be retried
	CodeHandshakeSlow  ErrorCode = "handshake_slow"  // no hello within the handshake deadline
	CodeServerShutdown ErrorCode = "server_shutdown" // the server is closing the connection
	CodeKicked         ErrorCode = "kicked"          // the host removed the user
	CodeReplaced       ErrorCode = "replaced"        // the session was resumed on another connection
)

func notInRoom(room string) *Error {
	return &Error{Code: CodeNotInRoom, Text: "you are not in room " + room}
}

// Error is an error message or refusal from the server.
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

// Refuse returns an error that a hook uses to refuse or reject with a reason
// the client receives. Errors not made by Refuse reach the client as a
// generic refusal, so internal details do not leak.
func Refuse(reason string) error { return &Error{Code: CodeRejected, Text: reason} }

// CloseCode is the QUIC application error code with which a Garou
// connection is closed. The codes are listed in PROTOCOL.md.
type CloseCode uint64

// Close codes.
const (
	CloseNormal           CloseCode = 0x00 // the client said bye, or closed
	CloseServerShutdown   CloseCode = 0x01 // the server is shutting down
	CloseServerFull       CloseCode = 0x02 // connection limit reached
	CloseNameRejected     CloseCode = 0x03 // name invalid or taken
	CloseTooLarge         CloseCode = 0x04 // a frame over the size limit
	CloseProtocol         CloseCode = 0x05 // protocol violation
	CloseSlowConsumer     CloseCode = 0x06 // the send queue passed its bound
	CloseUnauthorized     CloseCode = 0x07 // the authenticator refused
	CloseKicked           CloseCode = 0x08 // the host kicked the user
	CloseFlooding         CloseCode = 0x09 // went on sending over the rate limit
	CloseReplaced         CloseCode = 0x0a // the session resumed on a new connection
	CloseHandshakeTimeout CloseCode = 0x0b // no hello within the deadline
	CloseTooManyConns     CloseCode = 0x0c // per-address connection limit reached
	CloseInternal         CloseCode = 0x0d // the server failed
)

var closeCodeNames = map[CloseCode]string{
	CloseNormal:           "normal",
	CloseServerShutdown:   "server shutdown",
	CloseServerFull:       "server full",
	CloseNameRejected:     "name rejected",
	CloseTooLarge:         "message too large",
	CloseProtocol:         "protocol violation",
	CloseSlowConsumer:     "slow consumer",
	CloseUnauthorized:     "unauthorized",
	CloseKicked:           "kicked",
	CloseFlooding:         "flooding",
	CloseReplaced:         "replaced",
	CloseHandshakeTimeout: "handshake timeout",
	CloseTooManyConns:     "too many connections from address",
	CloseInternal:         "internal error",
}

func (c CloseCode) String() string {
	if s, ok := closeCodeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("close code %#x", uint64(c))
}

// retryable reports whether a client whose connection was closed with code
// (or whose hello was refused with it) should connect again, with backoff:
// the server went away for a while (a deploy), was full, or cut a client
// that read too slowly. The other codes are final: the server ended the
// session on purpose (kicked, replaced, bye) or will refuse it again (name,
// authorization, protocol, size, flooding).
func retryable(code CloseCode) bool {
	switch code {
	case CloseServerShutdown, CloseServerFull, CloseTooManyConns, CloseSlowConsumer,
		CloseHandshakeTimeout, CloseInternal:
		return true
	default:
		return false
	}
}

// CloseError reports how a connection ended: the close code and the reason
// sent with it. Remote is true when the peer closed the connection.
type CloseError struct {
	Code   CloseCode
	Reason string
	Remote bool
	// Err is the server's last word before closing (a "bye" frame), when
	// it arrived; errors.As reaches it through Unwrap.
	Err *Error
}

// Unwrap returns the server's error message, if any.
func (e *CloseError) Unwrap() error {
	if e.Err == nil {
		return nil
	}
	return e.Err
}

func (e *CloseError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
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
