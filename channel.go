package leveret

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Channel is an explicit AMQP channel. Operations on it go out in the order
// issued and pipeline without waiting for replies. If the broker closes the
// channel (a channel error), the failing operation gets the *ChannelError,
// every operation issued behind it fails with ErrNotExecuted wrapping that
// error, and Err reports it. Methods are safe for concurrent use.
//
// A channel from Client.Channel survives a dropped connection (unless
// reconnecting is off): operations pending at the drop fail with the
// connection's error, and once the client has reconnected the channel is
// re-opened with its prefetch, confirm mode, transaction mode, handlers and
// consumers. Publish and Send wait for that under their ctx; other
// operations issued meanwhile fail at once with the connection's error.
// OnReopen reports the re-open. Deliveries received before it are stale.
type Channel struct {
	c   *Client
	cur atomic.Pointer[link] // the AMQP channel it runs on now; replaced when it is re-opened after a reconnect

	done    chan struct{} // closed when the channel has ended
	endOnce sync.Once
	endErr  error

	confirmCount confirmCounter // reader only: for ConfirmHook's count

	mu        sync.Mutex
	consumers map[string]*Consumer
	unacked   tagSet   // deliveries awaiting ack, for refusing unknown tags locally
	tx        bool     // tx.select issued: acks are undone by a rollback
	txAcked   []uint64 // tags acknowledged in the current transaction
	prefetch  int      // largest prefetch count set on the channel
	onReturn  func(ops.Return)
	onConfirm func(Confirmation)
	onClose   func(error)
	state     chanState // see chanstate.go
	stale     bool      // ended with a connection the client replaced: acks are refused
	recovery            // explicit channels: re-opened on the next connection (chanrecovery.go)
	// settled is closed (and cleared) when no delivery awaits an
	// acknowledgement; made by waitSettled. closeWhenSettled: a cancelled
	// Client.Consume consumer's channel closes then.
	settled          chan struct{}
	closeWhenSettled bool
}

func newChannel(c *Client) *Channel {
	return &Channel{c: c, done: make(chan struct{}), consumers: make(map[string]*Consumer), onReturn: c.cfg.onReturn}
}

// openChannel opens a channel on g without waiting for channel.open-ok;
// operations issued on it pipeline behind the open.
func (c *Client) openChannel(g *generation, opened func(error)) (*Channel, error) {
	ch := newChannel(c)
	if err := c.open(ch, g, opened); err != nil {
		return nil, err
	}
	return ch, nil
}

// open opens ch, made by newChannel, on g's connection. The link is in
// place before mux can reach the channel: a refusal or the connection's end
// may arrive on the reader while Open is still returning.
func (c *Client) open(ch *Channel, g *generation, opened func(error)) error {
	l := ch.newLink(g, 0)
	ch.cur.Store(l)
	return l.mc.Open(opened)
}

// link is one AMQP channel of a Channel: single-use, like its connection.
// It is the mux.Handler of that AMQP channel, so what the reader reports
// names the link it came on, whichever link the Channel runs on by then.
// Its methods are for mux only: they are unexported through the type.
type link struct {
	ch   *Channel
	gen  *generation
	mc   *mux.Channel
	base uint64 // confirm mode: publishes sent on earlier links (see OnReopen)
	// record, on the link of a NewTestDelivery alone (every other field
	// zero), takes its settlements: real deliveries pay nothing for it.
	record func(Settlement) error
}

// newLink makes the link of a new, not yet open AMQP channel on g.
func (ch *Channel) newLink(g *generation, base uint64) *link {
	l := &link{ch: ch, gen: g, base: base}
	l.mc = g.Conn.NewChannel(l)
	return l
}

func (l *link) Async(m proto.Method, msg *ops.Message) { l.ch.async(l, m, msg) }
func (l *link) Closed(err error)                       { l.ch.closed(l, err) }
func (l *link) Oversized(m proto.Method, size uint64)  { l.ch.oversized(l, m, size) }

// lost reports whether the link's connection has ended and the client
// will replace it (not a channel error, not our own Close).
func (l *link) lost() bool {
	return l.gen.Conn.Err() != nil && l.ch.c.reg.reconnects()
}

// connectionLost reports whether the channel's connection has ended and
// the client will replace it (not a channel error, not our own Close).
func (ch *Channel) connectionLost() bool { return ch.cur.Load().lost() }

// mux is the AMQP channel the Channel runs on now.
func (ch *Channel) mux() *mux.Channel { return ch.cur.Load().mc }

// generation is the connection the Channel runs on now.
func (ch *Channel) generation() *generation { return ch.cur.Load().gen }

// async gets the asynchronous methods of link l (see mux.Handler). It runs
// on the reader goroutine, so it only hands work on: deliveries to consumer
// buffers, returns and confirms to the client's dispatcher goroutine.
func (ch *Channel) async(l *link, m proto.Method, msg *ops.Message) {
	switch m := m.(type) {
	case *proto.BasicDeliver:
		ch.mu.Lock()
		cs := ch.consumers[m.ConsumerTag]
		if cs != nil && !cs.noAck {
			ch.unacked.add(m.DeliveryTag)
		}
		ch.mu.Unlock()
		if cs == nil {
			// A delivery racing a cancel we already completed: give it back.
			ch.c.cfg.logger.Warn("amqp: delivery for unknown consumer; rejecting with requeue", "consumer", m.ConsumerTag)
			l.mc.Call(&mux.Request{Method: &proto.BasicReject{DeliveryTag: m.DeliveryTag, Requeue: true}})
			return
		}
		cs.deliver(&Delivery{Message: *msg, ConsumerTag: m.ConsumerTag, DeliveryTag: m.DeliveryTag,
			Redelivered: m.Redelivered, Exchange: m.Exchange, RoutingKey: m.RoutingKey, ch: ch, on: l})
	case *proto.BasicCancel:
		ch.mu.Lock()
		cs := ch.consumers[m.ConsumerTag]
		ch.mu.Unlock()
		switch {
		case cs == nil:
		case cs.own && cs.ran.Load() && ch.c.reg.reconnects():
			ch.c.reg.brokerCancelled(cs, ch) // a consumer timeout, or its queue is gone (consumercancel.go)
		default:
			cs.end(ErrConsumerCancelled)
		}
	case *proto.BasicReturn:
		r := ops.Return{ReplyCode: ops.ReplyCode(m.ReplyCode), ReplyText: m.ReplyText, Exchange: m.Exchange, RoutingKey: m.RoutingKey, Message: *msg}
		if h := ch.c.hooks; h != nil && len(h.ret) > 0 {
			ch.c.dispatch.postBatched(func() {
				for _, x := range h.ret {
					x.OnReturn(ch, r)
				}
			})
		}
		ch.mu.Lock()
		fn := ch.onReturn
		ch.mu.Unlock()
		if fn == nil {
			ch.c.cfg.logger.Warn("amqp: message returned and no return handler is set", "exchange", r.Exchange, "routing_key", r.RoutingKey, "reply_code", r.ReplyCode)
			return
		}
		ch.c.dispatch.postBatched(func() { fn(r) })
	case *proto.BasicAck:
		ch.confirmed(l, Confirmation{Ack: true, DeliveryTag: l.base + m.DeliveryTag, Multiple: m.Multiple})
	case *proto.BasicNack:
		ch.confirmed(l, Confirmation{DeliveryTag: l.base + m.DeliveryTag, Multiple: m.Multiple})
	}
}

// notifySettledLocked wakes waitSettled and closes the channel of a
// cancelled Client.Consume consumer once no delivery awaits an
// acknowledgement. Callers hold ch.mu; the close goes out after every ack
// already queued.
func (ch *Channel) notifySettledLocked() {
	if !ch.unacked.empty() && ch.state != chanEnded {
		return
	}
	if ch.settled != nil {
		close(ch.settled)
		ch.settled = nil
	}
	if ch.closeWhenSettled {
		ch.closeWhenSettled = false
		ch.mux().Close(func(error) {})
	}
}

// waitSettled blocks until no delivery received on the channel awaits an
// acknowledgement (or the channel has ended), or ctx ends.
func (ch *Channel) waitSettled(ctx context.Context) error {
	ch.mu.Lock()
	if ch.unacked.empty() || ch.state == chanEnded {
		ch.mu.Unlock()
		return nil
	}
	if ch.settled == nil {
		ch.settled = make(chan struct{})
	}
	settled := ch.settled
	ch.mu.Unlock()
	select {
	case <-settled:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the channel has ended.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err is nil while the channel is open, then why it ended: a *ChannelError
// if the broker closed it, a *ConnectionError if the connection failed, or
// an error wrapping ErrClosed after Close.
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
// already ended returns nil; its Err says why it ended. Closing a channel
// that waits to be re-opened after a dropped connection ends it at once.
func (ch *Channel) Close(ctx context.Context) error {
	if ch.endIfSuspended() {
		return nil
	}
	p := newPromise[struct{}]()
	if err := ch.mux().Close(func(err error) { p.resolve(struct{}{}, err) }); err != nil {
		if ch.mux().Err() != nil || errors.Is(err, ErrClosed) {
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

func (ch *Channel) issue(_ [2]string, m proto.Method, done replyFunc) {
	err := ch.mux().Call(&mux.Request{Method: m, Done: func(reply proto.Method, msg *ops.Message, err error) {
		if err == nil {
			ch.c.rec.Observe(m, reply) // topology is the client's, whichever channel declared it
		}
		done(reply, msg, ch, err)
	}})
	if err != nil {
		done(nil, nil, ch, err)
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
