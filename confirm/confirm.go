// Package confirm publishes with RabbitMQ publisher confirms: every
// publish returns a promise of its Outcome.
//
// A Publisher owns one channel in confirm mode. Each publish settles exactly
// once, as
//
//   - Acked: the broker took responsibility for the message;
//   - Nacked: the broker refused it (say, a full queue with
//     x-overflow=reject-publish); the message is not delivered;
//   - Returned: published with Mandatory and routed to no queue; Outcome.Return
//     holds what the broker sent back;
//   - an error: the channel or the connection ended before the broker
//     confirmed it. Such a publish may or may not have reached a queue; the
//     error wraps ErrNotConfirmed and the cause (a *leveret.ChannelError,
//     a *leveret.ConnectionError or leveret.ErrClosed). It is never reported
//     as a nack, and never as a success.
//
// A bounded window limits how many publishes await confirmation: when it is
// full, Publish waits for room. Flush waits until everything published so
// far has settled. Confirmations are applied on the client's dispatcher
// goroutine; the package starts a goroutine only to re-send after a
// reconnect (WithRepublish), joined by Close.
//
// When the connection drops and the client reconnects, the Publisher
// carries on: its channel is re-opened in confirm mode, Publish waits for
// that, and numbering goes on without drift (leveret.Channel.OnReopen).
// Publishes the drop left unconfirmed fail with ErrNotConfirmed wrapping
// the connection's error, or, with WithRepublish, are re-sent in order and
// settle with the new outcome (at-least-once).
package confirm

import (
	"fmt"

	"github.com/leveret-mq/leveret"

	"github.com/leveret-mq/leveret/ops"
)

// ErrNotConfirmed marks a publish whose channel or connection ended before
// the broker confirmed it: it may or may not have been delivered. The error
// also wraps the cause, so errors.As(err, new(*leveret.ConnectionError))
// and errors.Is(err, leveret.ErrNotFound) tell why. It is the same value
// as leveret.ErrNotConfirmed, which Client.Publish reports.
var ErrNotConfirmed = leveret.ErrNotConfirmed

// errClosed is why a Publisher refuses work after Close.
var errClosed = fmt.Errorf("amqp: confirm publisher closed (Close): %w", leveret.ErrClosed)

// Status is how the broker settled a publish.
type Status uint8

// The ways a broker settles a publish.
const (
	Acked    Status = iota + 1 // basic.ack: the broker has the message
	Nacked                     // basic.nack: the broker refused the message
	Returned                   // basic.return then its confirmation: mandatory and unroutable
)

// String returns "acked", "nacked" or "returned".
func (s Status) String() string {
	switch s {
	case Acked:
		return "acked"
	case Nacked:
		return "nacked"
	case Returned:
		return "returned"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Outcome is how the broker settled one publish.
type Outcome struct {
	Status Status
	// Return is the returned message and the broker's reason (usually 312
	// NO_ROUTE) when Status is Returned, else nil.
	Return *ops.Return
}

// Acked reports whether the broker acknowledged the message and did not
// return it.
func (o Outcome) Acked() bool { return o.Status == Acked }

func (o Outcome) String() string {
	if o.Return != nil {
		return fmt.Sprintf("%v (%d %s)", o.Status, o.Return.ReplyCode, o.Return.ReplyText)
	}
	return o.Status.String()
}

func notConfirmed(cause error) error { return fmt.Errorf("%w: %w", ErrNotConfirmed, cause) }
