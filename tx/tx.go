// Package tx runs AMQP transactions (tx.select, tx.commit, tx.rollback) on
// a leveret channel.
//
// In a transaction, the publishes and the acknowledgements made on the
// channel take effect together when Commit succeeds, and not at all after
// Rollback; a new transaction starts at once after either. Only
// acknowledgements of deliveries received on the transaction's channel
// (Channel) belong to it: deliveries are acknowledged on the channel they
// came from.
//
// Commit and Rollback are barriers: nothing issued on the channel after
// them is sent until the broker has answered, so a publish issued behind a
// Commit belongs to the next transaction. Like every leveret operation they
// return promises and do not block. The package starts no goroutines.
//
// When the connection drops during a transaction and the client
// reconnects, the channel is re-opened in transaction mode; Commit of the
// broken transaction rolls back what it did since and fails with
// leveret.ErrTransactionLost, and the next transaction works.
//
// RabbitMQ transactions are atomic only per queue, and slow: each commit
// waits for the queues involved. Publisher confirms (package confirm) are
// the faster way to know a message arrived.
package tx

import (
	"context"
	"errors"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// Tx is a channel in transaction mode. Its methods are safe for concurrent
// use, but which transaction a concurrent operation lands in depends on
// whether it was issued before or after a Commit or Rollback.
type Tx struct {
	ch  *leveret.Channel
	own bool // opened by New: closed by Close
}

// New opens a channel on c, puts it in transaction mode and waits, until ctx
// ends, for the broker to accept that (tx.select-ok).
func New(ctx context.Context, c *leveret.Client) (*Tx, error) {
	ch, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	t, err := Begin(ctx, ch)
	if err != nil {
		ch.Close(ctx) // queues channel.close; ctx may be over, so do not wait for it
		return nil, err
	}
	t.own = true
	return t, nil
}

// Begin puts ch in transaction mode (tx.select, once per channel: a
// channel cannot leave transaction mode) and waits, until ctx ends, for the
// broker to accept that. A channel in confirm mode cannot be transactional;
// the broker closes it with 406 PRECONDITION_FAILED. Close does not close a
// channel passed to Begin.
func Begin(ctx context.Context, ch *leveret.Channel) (*Tx, error) {
	if _, err := ch.TxSelect().Wait(ctx); err != nil {
		return nil, err
	}
	return &Tx{ch: ch}, nil
}

// Channel is the transaction's channel, for gets, consumers and anything
// else. Acks of deliveries received on it are part of the transaction;
// publishes made with its Publish are too.
func (t *Tx) Channel() *leveret.Channel { return t.ch }

// Publish publishes a message in the current transaction: the broker
// routes it when the transaction commits and drops it on rollback. The
// promise settles once the message is written to the socket; see
// leveret.Channel.Publish for waiting and errors.
func (t *Tx) Publish(ctx context.Context, o ops.Publish) *leveret.Promise[struct{}] {
	return t.ch.Publish(ctx, o)
}

// Ack acknowledges d in the current transaction: the broker removes the
// message when the transaction commits. After a rollback the delivery is
// unacknowledged again: ack it anew, or it is requeued when the channel
// ends. d must have
// been received on Channel; an acknowledgement on another channel is not
// part of the transaction.
// An ack of a delivery from another channel fails with ErrForeignDelivery
// and sends nothing.
func (t *Tx) Ack(d *leveret.Delivery) *leveret.Promise[struct{}] {
	if err := t.owns(d); err != nil {
		return failed(err)
	}
	return d.Ack()
}

// Nack rejects d (see leveret.Delivery.Nack) in the current transaction.
func (t *Tx) Nack(d *leveret.Delivery, o ops.Nack) *leveret.Promise[struct{}] {
	if err := t.owns(d); err != nil {
		return failed(err)
	}
	return d.Nack(o)
}

// ErrForeignDelivery reports an Ack or Nack of a delivery that was not
// received on the transaction's channel: it could not be part of the
// transaction.
var ErrForeignDelivery = errors.New("tx: delivery was not received on the transaction's channel")

func (t *Tx) owns(d *leveret.Delivery) error {
	if d == nil || d.Channel() != t.ch {
		return ErrForeignDelivery
	}
	return nil
}

func failed(err error) *leveret.Promise[struct{}] {
	p, settle := leveret.NewPromise[struct{}]()
	settle(struct{}{}, err)
	return p
}

// Commit makes the current transaction's publishes and acknowledgements
// take effect, atomically per queue, and starts the next transaction. It
// does not block. Nothing issued on the channel after it is sent before the
// broker answers. On a channel that has ended it fails with the cause; if
// the broker closes the channel because of an operation in the transaction
// (say, a publish to a missing exchange), the promise fails with
// leveret.ErrNotExecuted wrapping that error, and nothing was committed.
func (t *Tx) Commit() *leveret.Promise[struct{}] { return t.ch.TxCommit() }

// Rollback discards the current transaction's publishes and
// acknowledgements and starts the next transaction. It does not block and
// is a barrier like Commit. Deliveries whose ack it discarded are
// unacknowledged again and can be acknowledged anew; the broker does not
// redeliver them until the channel ends (or leveret.Channel.Recover).
func (t *Tx) Rollback() *leveret.Promise[struct{}] { return t.ch.TxRollback() }

// Err is nil while the channel is open, then the reason it ended.
func (t *Tx) Err() error { return t.ch.Err() }

// Close closes a channel opened by New, after everything issued on it and
// waiting for the broker until ctx ends; the broker rolls back an
// uncommitted transaction. For a Tx made with Begin it does nothing: the
// channel belongs to the caller.
func (t *Tx) Close(ctx context.Context) error {
	if !t.own {
		return nil
	}
	return t.ch.Close(ctx)
}
