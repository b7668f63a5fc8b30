package leveret

import (
	"context"
	"errors"
	"sync"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Channel is an explicit AMQP channel. Operations on it go out in the order
// issued and pipeline without waiting for replies. If the broker closes the
// channel (a channel error), the failing operation gets the *ChannelError,
// every operation issued behind it fails with ErrNotExecuted wrapping that
// error, and Err reports it. Methods are safe for concurrent use.
type Channel struct {
	c  *Client
	mc *mux.Channel

	done    chan struct{} // closed when the channel has ended
	endOnce sync.Once
	endErr  error
}

func newChannel(c *Client) *Channel {
	return &Channel{c: c, done: make(chan struct{})}
}

// Async implements mux.Handler; it runs on the reader goroutine.
func (ch *Channel) Async(m proto.Method, msg *ops.Message) {}

// Closed implements mux.Handler; it runs on the reader goroutine.
func (ch *Channel) Closed(err error) {
	ch.endOnce.Do(func() {
		ch.endErr = err
		close(ch.done)
	})
}

// Done is closed when the channel has ended.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err is nil while the channel is open, then why it ended: a *ChannelError
// if the broker closed it, a *ConnectionError if the connection failed, or
// ErrClosed after Close.
func (ch *Channel) Err() error {
	select {
	case <-ch.done:
		return ch.endErr
	default:
		return nil
	}
}

// Close closes the channel after everything issued on it so far and waits,
// until ctx ends, for the broker to confirm. Closing a channel that has
// already ended returns nil; its Err says why it ended.
func (ch *Channel) Close(ctx context.Context) error {
	p := newPromise[struct{}]()
	if err := ch.mc.Close(func(err error) { p.resolve(struct{}{}, err) }); err != nil {
		if ch.mc.Err() != nil || errors.Is(err, ErrClosed) {
			return nil
		}
		return err
	}
	_, err := p.Wait(ctx)
	if err != nil && ctx.Err() == nil {
		return nil // the channel ended another way while closing; Err says how
	}
	return err
}

func (ch *Channel) issue(_ [2]string, m proto.Method, done func(proto.Method, error)) {
	err := ch.mc.Call(&mux.Request{Method: m, Done: func(reply proto.Method, _ *ops.Message, err error) {
		done(reply, err)
	}})
	if err != nil {
		done(nil, err)
	}
}

// ExchangeDeclare declares an exchange. It does not block.
func (ch *Channel) ExchangeDeclare(o ops.ExchangeDeclare) *Promise[ops.ExchangeDeclareOk] {
	return issue(ch, [2]string{}, exchangeDeclare(o), exchangeDeclareOk)
}

// ExchangeDelete deletes an exchange. It does not block.
func (ch *Channel) ExchangeDelete(o ops.ExchangeDelete) *Promise[ops.ExchangeDeleteOk] {
	return issue(ch, [2]string{}, exchangeDelete(o), exchangeDeleteOk)
}

// ExchangeBind binds two exchanges. It does not block.
func (ch *Channel) ExchangeBind(o ops.ExchangeBind) *Promise[ops.ExchangeBindOk] {
	return issue(ch, [2]string{}, exchangeBind(o), exchangeBindOk)
}

// ExchangeUnbind unbinds two exchanges. It does not block.
func (ch *Channel) ExchangeUnbind(o ops.ExchangeUnbind) *Promise[ops.ExchangeUnbindOk] {
	return issue(ch, [2]string{}, exchangeUnbind(o), exchangeUnbindOk)
}

// QueueDeclare declares a queue. It does not block.
func (ch *Channel) QueueDeclare(o ops.QueueDeclare) *Promise[ops.QueueDeclareOk] {
	return issue(ch, [2]string{}, queueDeclare(o), queueDeclareOk)
}

// QueueBind binds a queue to an exchange. It does not block.
func (ch *Channel) QueueBind(o ops.QueueBind) *Promise[ops.QueueBindOk] {
	return issue(ch, [2]string{}, queueBind(o), queueBindOk)
}

// QueueUnbind removes a binding. It does not block.
func (ch *Channel) QueueUnbind(o ops.QueueUnbind) *Promise[ops.QueueUnbindOk] {
	return issue(ch, [2]string{}, queueUnbind(o), queueUnbindOk)
}

// QueuePurge purges a queue. It does not block.
func (ch *Channel) QueuePurge(o ops.QueuePurge) *Promise[ops.QueuePurgeOk] {
	return issue(ch, [2]string{}, queuePurge(o), queuePurgeOk)
}

// QueueDelete deletes a queue. It does not block.
func (ch *Channel) QueueDelete(o ops.QueueDelete) *Promise[ops.QueueDeleteOk] {
	return issue(ch, [2]string{}, queueDelete(o), queueDeleteOk)
}
