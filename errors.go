package leveret

import (
	"errors"
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// ReplyCode is an AMQP reply code such as 404 NOT_FOUND; its String names
// it as the specification does. It is the type ops.Return uses too.
type ReplyCode = ops.ReplyCode

// codeError is a sentinel that matches channel and connection errors by
// reply code under errors.Is.
type codeError struct {
	code ReplyCode
	text string
}

func (e *codeError) Error() string { return e.text }

// Sentinels matched by reply code: errors.Is(err, ErrNotFound) is true for a
// *ChannelError or *ConnectionError with code 404, however it is wrapped.
var (
	ErrNoRoute            error = &codeError{312, "amqp: no route"}
	ErrConnectionForced   error = &codeError{320, "amqp: connection forced"}
	ErrInvalidPath        error = &codeError{402, "amqp: invalid path"}
	ErrAccessRefused      error = &codeError{403, "amqp: access refused"}
	ErrNotFound           error = &codeError{404, "amqp: not found"}
	ErrResourceLocked     error = &codeError{405, "amqp: resource locked"}
	ErrPreconditionFailed error = &codeError{406, "amqp: precondition failed"}
	ErrFrameError         error = &codeError{501, "amqp: frame error"}
	ErrSyntaxError        error = &codeError{502, "amqp: syntax error"}
	ErrCommandInvalid     error = &codeError{503, "amqp: command invalid"}
	ErrChannelError       error = &codeError{504, "amqp: channel error"}
	ErrUnexpectedFrame    error = &codeError{505, "amqp: unexpected frame"}
	ErrResourceError      error = &codeError{506, "amqp: resource error"}
	ErrNotAllowed         error = &codeError{530, "amqp: not allowed"}
	ErrNotImplemented     error = &codeError{540, "amqp: not implemented"}
	ErrInternalError      error = &codeError{541, "amqp: internal error"}
)

var (
	// ErrClosed reports an operation on a client or channel that this side
	// has closed, or an operation still pending when it was closed. The
	// error returned wraps it and says what was closed, e.g. "amqp: channel
	// 3 closed by this client (Close)"; match it with errors.Is.
	ErrClosed = errors.New("amqp: closed")
	// ErrNotExecuted marks an operation that the broker discarded because
	// its channel closed in front of it. The error also wraps the cause, so
	// errors.Is(err, ErrPreconditionFailed) tells why.
	ErrNotExecuted = errors.New("amqp: operation not executed")
	// ErrHeartbeatTimeout is the cause of a connection ended because the
	// broker sent nothing for an interval and a half (at most).
	ErrHeartbeatTimeout = errors.New("amqp: heartbeat timeout")
	// ErrChannelLimit reports that every channel number allowed by the
	// negotiated channel_max is in use.
	ErrChannelLimit = errors.New("amqp: no free channel number (channel_max reached)")
	// ErrMessageTooLarge marks a message the client refused because its
	// body was over WithMaxMessageSize: a Get's error, and the Err of
	// EventMessageRefused for a delivery or a returned message. The text
	// says which queue (or exchange), the size and the limit.
	ErrMessageTooLarge = errors.New("amqp: message over the client's size limit")
)

// muxErrors hands the public sentinels to internal/mux, which reports them.
func muxErrors() mux.Errors {
	return mux.Errors{Closed: ErrClosed, NotExecuted: ErrNotExecuted, Heartbeat: ErrHeartbeatTimeout, ChannelLimit: ErrChannelLimit,
		TooLarge: ErrMessageTooLarge}
}

// ChannelError is a channel ("soft") error: the broker closed one channel,
// naming the reply code and the method that failed. The connection and its
// other channels carry on.
type ChannelError struct {
	Code     ReplyCode
	Text     string // the broker's reply text
	ClassID  uint16 // class of the failed method, 0 if none was named
	MethodID uint16 // method of the failed method within its class
}

func (e *ChannelError) Error() string {
	return fmt.Sprintf("amqp: channel closed: %d %v: %s%s", e.Code, e.Code, e.Text, methodSuffix(e.ClassID, e.MethodID))
}

// Method names the method that failed, such as "queue.declare", or is ""
// if the broker named none.
func (e *ChannelError) Method() string { return methodName(e.ClassID, e.MethodID) }

// Is matches reply-code sentinels such as ErrNotFound.
func (e *ChannelError) Is(target error) bool { return matchCode(target, e.Code) }

// ConnectionError is a connection ("hard") error: the broker closed the
// connection, this side found a protocol violation, or the network failed
// (Code 0, with the I/O error as Cause). Every pending operation fails with it.
type ConnectionError struct {
	Code     ReplyCode
	Text     string
	ClassID  uint16
	MethodID uint16
	Cause    error // the I/O or heartbeat error behind a lost connection
}

func (e *ConnectionError) Error() string {
	if e.Code == 0 {
		return fmt.Sprintf("amqp: connection lost: %s: %v", e.Text, e.Cause)
	}
	return fmt.Sprintf("amqp: connection closed: %d %v: %s%s", e.Code, e.Code, e.Text, methodSuffix(e.ClassID, e.MethodID))
}

// Is matches reply-code sentinels such as ErrAccessRefused.
func (e *ConnectionError) Is(target error) bool { return matchCode(target, e.Code) }

// Method names the method the broker blamed, such as "connection.open",
// or is "" if it named none.
func (e *ConnectionError) Method() string { return methodName(e.ClassID, e.MethodID) }

// Unwrap returns the I/O error behind a lost connection.
func (e *ConnectionError) Unwrap() error { return e.Cause }

func matchCode(target error, code ReplyCode) bool {
	c, ok := target.(*codeError)
	return ok && c.code == code
}

func methodSuffix(class, method uint16) string {
	if class == 0 {
		return ""
	}
	return " (" + methodName(class, method) + ")"
}

func methodName(class, method uint16) string {
	if class == 0 {
		return ""
	}
	return proto.MethodID(uint32(class)<<16 | uint32(method)).String()
}

// faultError turns mux's description of a failure into the public types.
func faultError(f mux.Fault) error {
	if f.Hard {
		return &ConnectionError{Code: ReplyCode(f.Code), Text: f.Text, ClassID: f.Method.Class(), MethodID: f.Method.Method(), Cause: f.Cause}
	}
	return &ChannelError{Code: ReplyCode(f.Code), Text: f.Text, ClassID: f.Method.Class(), MethodID: f.Method.Method()}
}

// isConnectionError reports whether err ended the whole connection.
func isConnectionError(err error) bool {
	var ce *ConnectionError
	return errors.As(err, &ce) || errors.Is(err, ErrClosed)
}

var (
	// ErrNacked is the error of a Client.Publish the broker refused with
	// basic.nack (for example a queue at its length limit with
	// overflow=reject-publish). The message was not taken.
	ErrNacked = errors.New("amqp: publish nacked by the broker")
	// ErrNotConfirmed marks a publish whose channel or connection ended
	// before the broker confirmed it: it may or may not have arrived. The
	// error also wraps the cause.
	ErrNotConfirmed = errors.New("amqp: publish not confirmed")
)

// ReturnedError is the error of a mandatory Client.Publish that the broker
// returned as unroutable (basic.return). errors.Is matches the return's
// reply code, usually ErrNoRoute.
type ReturnedError struct {
	Return ops.Return // the returned message, without leveret's tag header
}

func (e *ReturnedError) Error() string {
	return fmt.Sprintf("amqp: message returned: %d %s (exchange %q, routing key %q)",
		e.Return.ReplyCode, e.Return.ReplyText, e.Return.Exchange, e.Return.RoutingKey)
}

// Is matches reply-code sentinels such as ErrNoRoute.
func (e *ReturnedError) Is(target error) bool {
	return matchCode(target, e.Return.ReplyCode)
}
