package mux

import (
	"errors"
	"fmt"

	"github.com/leveret-mq/leveret/internal/proto"
)

// Errors are the sentinel errors mux reports. The owner supplies its own
// public values, so that errors.Is matches them and they read as the
// owner's; a nil field takes mux's default of the same name (ErrClosed,
// ErrNotExecuted, ErrHeartbeat, ErrChannelLimit).
type Errors struct {
	Closed       error // wrapped with what was closed: see Conn.closedByUs
	NotExecuted  error
	Heartbeat    error
	ChannelLimit error
	TooLarge     error // a message over MaxMessageSize, refused (see Handler.Oversized)
}

func (e *Errors) setDefaults() {
	for _, f := range []struct {
		field *error
		def   error
	}{{&e.Closed, ErrClosed}, {&e.NotExecuted, ErrNotExecuted}, {&e.Heartbeat, ErrHeartbeat}, {&e.ChannelLimit, ErrChannelLimit}, {&e.TooLarge, ErrTooLarge}} {
		if *f.field == nil {
			*f.field = f.def
		}
	}
}

// contextError says what was closed and by whom, and unwraps to the Closed
// sentinel.
type contextError struct {
	text string
	base error
}

func (e *contextError) Error() string { return e.text }
func (e *contextError) Unwrap() error { return e.base }

var (
	// ErrClosed reports use of a connection or channel after this side closed it.
	ErrClosed = errors.New("amqp: closed")
	// ErrNotExecuted marks an operation the broker discarded because the
	// channel closed in front of it. Errors carrying it also wrap the cause.
	ErrNotExecuted = errors.New("amqp: operation not executed")
	// ErrHeartbeat is the cause of a connection ended because the peer sent
	// nothing for an interval and a half (at most).
	ErrHeartbeat = errors.New("amqp: heartbeat timeout")
	// ErrTooLarge marks a message refused because it was over
	// MaxMessageSize.
	ErrTooLarge = errors.New("amqp: message over the size limit")
)

// Fault describes why a channel or the connection ended: a close method the
// peer sent, a protocol violation this side detected (Local), or an I/O
// failure (Cause).
type Fault struct {
	Hard   bool // connection-level
	Local  bool // detected by this side rather than sent by the peer
	Code   proto.ReplyCode
	Text   string
	Method proto.MethodID // the method that caused it, when the peer names one
	Cause  error          // underlying I/O error, if any
}

// Error is the error mux produces for a Fault when Config.FaultError is nil.
type Error struct{ Fault }

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("amqp: connection lost: %s: %v", e.Text, e.Cause)
	}
	return fmt.Sprintf("amqp: %d %s: %s (%v)", e.Code, e.Code, e.Text, e.Method)
}

func (e *Error) Unwrap() error { return e.Cause }

func (c *Conn) notExecuted(cause error) error {
	return fmt.Errorf("%w: %w", c.cfg.Errors.NotExecuted, cause)
}

func (c *Conn) faultError(f Fault) error {
	if c.cfg.FaultError != nil {
		return c.cfg.FaultError(f)
	}
	return &Error{f}
}

// protocolFault is a hard error this side found in what the peer sent.
func (c *Conn) protocolFault(code proto.ReplyCode, format string, args ...any) error {
	return c.faultError(Fault{Hard: true, Local: true, Code: code, Text: fmt.Sprintf(format, args...)})
}
