package leveret

import (
	"context"
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/pool"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Publish sends a message on this channel. It waits, honouring ctx, only
// while the connection's output buffer is full or the broker has blocked
// publishing (connection.blocked). The promise settles when the frames have
// been written to the socket; that is not a confirmation that the broker
// took the message: use the confirm package for that. If the broker
// rejects the publish (say, 404 for a missing exchange) it closes the
// channel, and the error surfaces at the next operation on the channel and
// in Err. A promise that has failed with the channel's or connection's
// end, or with ctx's error, when Publish returns means nothing was sent
// (a write that failed part-way is discarded by the broker with the
// connection). While the channel waits to be re-opened after a dropped
// connection, Publish waits for it, honouring ctx. The caller may reuse
// o.Message.Body as soon as Publish returns.
//
// A body of 16 KiB or more on a plain TCP connection is not copied: its
// frames are written from o.Message.Body, and Publish returns once the
// socket has taken them (the promise has then settled). If ctx ends
// before the writer reaches them, they are copied and Publish returns; the
// message still goes out. Over TLS every body is copied and Publish
// returns once it is queued.
func (ch *Channel) Publish(ctx context.Context, o ops.Publish) *Promise[struct{}] {
	p := newPromise[struct{}]()
	written := func(err error) { p.resolve(struct{}{}, err) }
	var err error
	if h := ch.c.hooks; h.publishes() {
		err = ch.hookedPublish(ctx, h, o, written)
	} else {
		m := &proto.BasicPublish{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory}
		err = ch.publish(ctx, m, &o.Message, written)
	}
	if err != nil {
		p.resolve(struct{}{}, err)
	}
	return p
}

// hookedPublish is publish under the client's publish hooks. It takes o
// by value, apart from the hookless path, so that only a hooked publish
// moves o to the heap (the hooks are given a pointer to its message).
func (ch *Channel) hookedPublish(ctx context.Context, h *hookSet, o ops.Publish, written func(error)) error {
	m := &proto.BasicPublish{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory}
	info := &PublishInfo{Exchange: m.Exchange, RoutingKey: m.RoutingKey, Mandatory: m.Mandatory, Message: &o.Message, Channel: ch}
	ctx = h.startPublish(ctx, info)
	err := ch.publish(ctx, m, &o.Message, written)
	h.donePublish(ctx, info, err)
	return err
}

// publish sends on the channel's current AMQP channel, waiting under ctx
// while it is suspended. (In confirm mode mux counts the publishes, see
// reopen.)
func (ch *Channel) publish(ctx context.Context, m *proto.BasicPublish, msg *ops.Message, written func(error)) error {
	l := ch.cur.Load()
	for {
		err := l.mc.Publish(ctx, m, msg, written)
		if err == nil {
			if ch.txMode.Load() && !ch.txPublished.Load() {
				ch.txPublished.Store(true) // the transaction now has something to lose
			}
			return nil
		}
		// Refused because the connection dropped: nothing was sent, so it
		// goes out on the re-opened channel once there is one.
		// Asked of l, not the Channel's current link: that may be a new
		// one already, re-opened in the meantime.
		if !ch.recovers || ctx.Err() != nil || !ch.c.droppedWith(ctx, l.gen, err) {
			return err
		}
		if _, err = ch.live(ctx); err != nil {
			return err
		}
		l = ch.cur.Load()
	}
}

// Send publishes like Publish but without a promise, for callers that
// learn what became of a message another way (publisher confirms, the
// channel's end). It waits like Publish. It returns nil once the message is
// queued for the socket (for a large body on TCP, written to it, as with
// Publish), or the error that kept it from being sent, in which case
// nothing was sent. A write that fails ends the connection, and with it
// the channel. The caller may reuse o.Message.Body as soon as Send returns.
func (ch *Channel) Send(ctx context.Context, o ops.Publish) error {
	if h := ch.c.hooks; h.publishes() {
		return ch.hookedPublish(ctx, h, o, nil)
	}
	m := proto.BasicPublish{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory}
	return ch.publish(ctx, &m, &o.Message, nil)
}

// Publish sends a message on one of the client's own channels and settles
// when the broker has confirmed it: this is the safe way to publish at the
// client level. The promise settles with nil once the broker acked the
// message; with ErrNacked if it nacked it; with a *ReturnedError if it was
// Mandatory and unroutable; with the broker's *ChannelError (say, 404 for a
// missing exchange) if this publish closed its channel; and with
// ErrNotConfirmed wrapping the cause if the client ended first (the
// message may or may not have arrived).
//
// Across a dropped connection the publish is not lost: an unconfirmed one
// is re-sent on the next connection and settles with that confirmation
// (at-least-once: it may arrive twice), and while the client reconnects a
// new Publish waits for the connection, honouring ctx, its copy counted
// against WithUnconfirmedLimit.
//
// One failing publish affects no other: publishes the broker discarded
// because an operation in front of them closed their channel are re-sent on
// a fresh one (so a message may, rarely, arrive twice). The publish goes out
// after client-level operations still pending on its exchange (or, for the
// default exchange, its queue), and client-level operations on other
// channels that name that entity wait for its confirmation.
//
// Publish copies the message (the caller may reuse o.Message.Body at once)
// and keeps the copy until the broker confirms; a body of 16 KiB or more
// is copied into a buffer rounded up to a power of two, reused after the
// confirmation. It waits, honouring ctx, while the unconfirmed copies
// exceed WithUnconfirmedLimit, the output buffer is full or the broker
// blocks publishing; if ctx has ended first, nothing is sent and the
// promise has failed with ctx's error. For
// fire-and-forget publishing use Channel.Publish or Channel.Send; for a
// confirmed stream with a window of its own, the confirm package.
func (c *Client) Publish(ctx context.Context, o ops.Publish) *Promise[struct{}] {
	p := newPromise[struct{}]()
	if err := c.publish(ctx, &o, p); err != nil {
		p.resolve(struct{}{}, err)
	}
	return p
}

// Get fetches one message from a queue. It does not block. It runs on a
// channel the client keeps for that queue, so that the delivery (acked on
// the channel it came from) cannot be voided by an unrelated failure on the
// client's other channels. Get goes out after the client-level operations
// on its queue have completed: its declare, and a Client.Publish routed to
// it by name through the default exchange (which is then confirmed, so the
// Get can see the message). A publish through a named exchange is not
// ordered before it: to read what you just published there, wait for that
// publish's promise first.
func (c *Client) Get(o ops.Get) *Promise[GetResult] {
	p := newPromise[GetResult]()
	c.pool.AfterPending(pool.Key('q', o.Queue), func() { c.reg.get(o, p, 0) })
	return p
}

// getReply settles a Get's promise from basic.get-ok or basic.get-empty.
func getReply(p *Promise[GetResult], noAck bool) replyFunc {
	return func(reply proto.Method, msg *ops.Message, ch *Channel, err error) {
		ok, _ := reply.(*proto.BasicGetOk)
		if err != nil || ok == nil {
			p.resolve(GetResult{}, err)
			return
		}
		d := &Delivery{Message: *msg, DeliveryTag: ok.DeliveryTag, Redelivered: ok.Redelivered,
			Exchange: ok.Exchange, RoutingKey: ok.RoutingKey, MessageCount: ok.MessageCount, ch: ch, on: ch.cur.Load()}
		if !noAck {
			ch.mu.Lock()
			ch.unacked.add(ok.DeliveryTag)
			ch.mu.Unlock()
		}
		p.resolve(GetResult{Delivery: d}, nil)
	}
}

// Get fetches one message from a queue, if there is one. It does not block.
func (ch *Channel) Get(o ops.Get) *Promise[GetResult] {
	p := newPromise[GetResult]()
	ch.issue([2]string{}, &proto.BasicGet{Queue: o.Queue, NoAck: o.NoAck}, getReply(p, o.NoAck))
	return p
}

// Confirmation is a publisher confirm: the broker's basic.ack (Ack true)
// or basic.nack for the publish numbered DeliveryTag (counting from 1 after
// ConfirmSelect, in publish order) and, with Multiple, every earlier one.
type Confirmation struct {
	Ack         bool
	DeliveryTag uint64
	Multiple    bool
}

// ConfirmSelect puts the channel in confirm mode (confirm.select): from
// then on the broker confirms every publish, and OnConfirm's handler sees
// the confirmations. Most programs use the confirm package instead. It does
// not block; publishes issued after it count from 1.
func (ch *Channel) ConfirmSelect() *Promise[struct{}] {
	ch.confirming.Store(true)
	return issue(ch, [2]string{}, &proto.ConfirmSelect{}, func(proto.Method) struct{} { return struct{}{} })
}

// OnReturn sets the handler for mandatory messages returned on this
// channel. OnReturn, OnConfirm and OnClose handlers run one at a time on
// the client's dispatcher goroutine, in the order the broker sent the
// events (a return comes before the confirmation of the same message).
// A handler must return promptly: while it runs, later events wait.
func (ch *Channel) OnReturn(fn func(ops.Return)) {
	ch.mu.Lock()
	ch.onReturn = fn
	ch.mu.Unlock()
}

// OnConfirm sets the handler for publisher confirmations on this channel.
// See OnReturn for where and in which order handlers run.
func (ch *Channel) OnConfirm(fn func(Confirmation)) {
	ch.mu.Lock()
	ch.onConfirm = fn
	ch.mu.Unlock()
}

// OnClose sets a handler called once with the reason the channel ended,
// after every return and confirmation the broker sent before that. See
// OnReturn for where handlers run. If the channel has already ended, the
// handler is queued at once.
func (ch *Channel) OnClose(fn func(error)) {
	ch.mu.Lock()
	ch.onClose = fn
	ended := ch.state == chanEnded
	ch.mu.Unlock()
	if ended {
		ch.c.dispatch.post(func() { fn(ch.endErr) })
	}
}

// confirmed hands a confirmation to the confirm hooks and the OnConfirm
// handler. It runs on the reader goroutine.
func (ch *Channel) confirmed(l *link, cf Confirmation) {
	if h := ch.c.hooks; h != nil && len(h.confirm) > 0 {
		n := ch.confirmCount.settle(cf, l.base)
		ch.c.dispatch.postBatched(func() {
			for _, x := range h.confirm {
				x.OnConfirm(ch, cf, n)
			}
		})
	}
	ch.mu.Lock()
	fn := ch.onConfirm
	ch.mu.Unlock()
	if fn != nil {
		ch.c.dispatch.postBatched(func() { fn(cf) })
	}
}

// TxSelect puts the channel in transaction mode (tx.select). Most programs
// use the tx package instead. It does not block.
func (ch *Channel) TxSelect() *Promise[struct{}] {
	ch.mu.Lock()
	ch.tx = true
	ch.txMode.Store(true)
	ch.mu.Unlock()
	return issue(ch, [2]string{}, &proto.TxSelect{}, func(proto.Method) struct{} { return struct{}{} })
}

// TxCommit commits the current transaction. Nothing issued on the channel
// after it is sent until the broker answers: it is a barrier. It does not
// block. If the connection dropped during the transaction, what it did on
// the lost connection was discarded: the commit then rolls back what the
// transaction did since, on the re-opened channel, and fails with
// ErrTransactionLost; the next transaction works.
func (ch *Channel) TxCommit() *Promise[struct{}] {
	ch.mu.Lock()
	lost := ch.txLost
	ch.txLost = nil
	ch.mu.Unlock()
	if lost != nil {
		// Part of the transaction went with the lost connection: what it did
		// on the re-opened channel is rolled back rather than committed half.
		return ch.barrierThen(&proto.TxRollback{}, func() {
			ch.unacked.restore(ch.txAcked)
			ch.txAcked = ch.txAcked[:0]
			ch.txPublished.Store(false)
		}, fmt.Errorf("%w: %w", ErrTransactionLost, lost))
	}
	return ch.barrier(&proto.TxCommit{}, func() {
		ch.txAcked = ch.txAcked[:0]
		ch.txPublished.Store(false)
	})
}

// TxRollback abandons the current transaction; like TxCommit it is a
// barrier. It does not block. Deliveries acknowledged in the abandoned
// transaction are unacknowledged again and may be acknowledged anew.
func (ch *Channel) TxRollback() *Promise[struct{}] {
	ch.mu.Lock()
	ch.txLost = nil // nothing of it is left to roll back; the rollback is harmless
	ch.mu.Unlock()
	return ch.barrier(&proto.TxRollback{}, func() {
		ch.unacked.restore(ch.txAcked)
		ch.txAcked = ch.txAcked[:0]
		ch.txPublished.Store(false)
	})
}

// barrier issues m as a barrier. issued runs under ch.mu once m is queued,
// so no acknowledgement can fall between it and m.
func (ch *Channel) barrier(m proto.Method, issued func()) *Promise[struct{}] {
	return ch.barrierThen(m, issued, nil)
}

// barrierThen is barrier whose promise fails with fail (if set) once m
// has been answered.
func (ch *Channel) barrierThen(m proto.Method, issued func(), fail error) *Promise[struct{}] {
	p := newPromise[struct{}]()
	ch.mu.Lock()
	err := ch.mux().Call(&mux.Request{Method: m, Barrier: true, Done: func(_ proto.Method, _ *ops.Message, err error) {
		if err == nil {
			err = fail
		}
		p.resolve(struct{}{}, err)
	}})
	if err == nil {
		issued()
	}
	ch.mu.Unlock()
	if err != nil {
		p.resolve(struct{}{}, err)
	}
	return p
}
