package pool

import (
	"errors"
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/internal/topology"
)

// Owner is what the pool needs from the client above it: the meaning of
// the client's error values, and where to report a message it dropped.
// Its methods run on any goroutine, the reader's included, with no pool
// lock held; they must not block.
type Owner interface {
	// Classify says what err, an operation's failure, means to the pool.
	Classify(err error) Fault
	// RefusedReturn reports a basic.return whose message was over the
	// client's size limit and was dropped; its publish settles by its
	// confirmation as usual.
	RefusedReturn(r *proto.BasicReturn, size uint64)
}

// Fault is an operation's error as the pool sees it.
type Fault struct {
	// Connection: the connection ended (the broker closed it, it was lost,
	// or this side closed it).
	Connection bool
	// Discarded: the broker discarded the operation because its channel
	// closed in front of it (not the connection).
	Discarded bool
	// Channel: the broker closed the operation's channel, blaming the
	// method ClassID, MethodID, with Text.
	Channel           bool
	ClassID, MethodID uint16
	Text              string
}

// Errors are the client's sentinels the pool reports, so that errors.Is
// matches the client's public values.
type Errors struct {
	// Nacked is a publish's error when the broker nacked it.
	Nacked error
	// NotConfirmed is wrapped, with the cause, by the error of a publish
	// whose channel or connection ended before it was confirmed.
	NotConfirmed error
}

// Config is what New needs.
type Config struct {
	Owner  Owner
	Errors Errors
	// Gate is the client's: where operations go, or wait while it
	// reconnects. The pool never ends it.
	Gate *session.Gate[*session.Generation]
	// Record learns from the replies to the pool's topology operations,
	// for replay on the next connection.
	Record *topology.Record
	// Channels is how many pooled channels carry topology operations.
	Channels int
	// UnconfirmedLimit bounds the bytes held by unconfirmed publishes.
	UnconfirmedLimit int
}

// connLost reports whether err says the operation's connection ended (or
// none was ready): then it may go out on the next one.
func (p *Pool) connLost(err error) bool {
	return errors.Is(err, session.ErrOffline) || p.owner.Classify(err).Connection
}

// Discarded reports whether err says the broker discarded an operation
// behind a failure on its channel (not the connection's), so that it may be
// sent again, tries permitting.
func (p *Pool) Discarded(err error, tries int) bool {
	return err != nil && tries < maxReissues && p.owner.Classify(err).Discarded
}

// RetryFresh reports whether an operation that mc, a channel of g,
// refused should be tried on a fresh channel: mc ended between lookup and
// call, the connection did not, and tries are left.
func RetryFresh(mc *mux.Channel, g *session.Generation, tries int) bool {
	return mc != nil && mc.Err() != nil && g.Conn.Err() == nil && tries < maxReissues
}

func (p *Pool) notConfirmed(cause error) error {
	return fmt.Errorf("%w: %w", p.errs.NotConfirmed, cause)
}

// Key is an operation's ordering key for an entity of a kind ('e'
// exchange, 'q' queue). It is "" for names that order nothing: the
// default exchange and a queue the broker will name.
func Key(kind byte, name string) string {
	if name == "" {
		return ""
	}
	return string(kind) + ":" + name
}
