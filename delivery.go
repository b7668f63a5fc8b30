package leveret

import (
	"context"
	"errors"
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// ErrUnknownDeliveryTag reports an ack, nack or reject of a delivery that
// is not outstanding on its channel (already acknowledged, or received
// with NoAck). It is refused locally: sending it would make the broker close
// the channel with 406.
var ErrUnknownDeliveryTag = errors.New("amqp: unknown delivery tag (already acknowledged?)")

// ErrStaleDelivery reports an ack, nack or reject of a delivery received on
// a channel the client has since replaced: its connection dropped and was
// replaced, or the broker closed or cancelled a Client.Consume consumer's
// channel (a consumer timeout, say) and the consumer runs on a fresh one.
// It is refused locally and nothing is sent: the broker requeued the
// delivery with its channel (it is redelivered, with Redelivered set), and
// its tag on the new channel would name a different message. The error
// also wraps why the old channel ended.
var ErrStaleDelivery = errors.New("amqp: stale delivery: its channel was replaced")

// Delivery is a message received by a consumer or by Get. The embedded
// Message, including Body, belongs to the receiver.
type Delivery struct {
	ops.Message
	ConsumerTag  string // empty for Get
	DeliveryTag  uint64 // identifies the delivery on its channel, for acks
	Redelivered  bool   // delivered before and not acknowledged
	Exchange     string
	RoutingKey   string
	MessageCount uint32 // for Get: messages left in the queue

	ch   *Channel
	on   *link           // the AMQP channel it arrived on: its tag means nothing on another
	cost int             // while in a consumer's overflow queue: what it counts against the memory limit
	hctx context.Context // made by a DeliveryHook; nil without one
}

// Ack acknowledges the delivery. It does not block: the promise settles
// when the ack is queued for the socket, or at once with an error if the
// delivery's channel has ended (nothing is sent to another channel), the
// delivery was already acknowledged, or it was received before a reconnect
// (ErrStaleDelivery: the broker has requeued it and redelivers it).
func (d *Delivery) Ack() *Promise[struct{}] {
	return d.settle(SettleAck, false, false, nil)
}

// stale refuses an acknowledgement of a delivery whose channel has been
// re-opened since: the tag would name another message there.
func (d *Delivery) stale() error {
	if d.ch == nil || d.on == nil || d.ch.cur.Load() == d.on {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrStaleDelivery, d.on.mc.Err())
}

// Nack rejects the delivery (and, with o.Multiple, every earlier
// unacknowledged one on its channel). o.DeliveryTag is ignored.
//
// On a quorum queue, RabbitMQ 4.x limits redeliveries (delivery-limit, 20
// by default): past it the message is dropped, or dead-lettered if the
// queue has a dead-letter exchange. From 4.3 a Nack with requeue does not
// count toward the limit and a Reject with requeue does; on 4.0-4.2 both
// do (docs/rabbitmq-versions.md).
func (d *Delivery) Nack(o ops.Nack) *Promise[struct{}] {
	return d.settle(SettleNack, o.Multiple, o.Requeue, &proto.BasicNack{DeliveryTag: d.DeliveryTag, Multiple: o.Multiple, Requeue: o.Requeue})
}

// Reject rejects the delivery. o.DeliveryTag is ignored. See Nack for
// RabbitMQ 4.x's delivery limit on quorum queues.
func (d *Delivery) Reject(o ops.Reject) *Promise[struct{}] {
	return d.settle(SettleReject, false, o.Requeue, &proto.BasicReject{DeliveryTag: d.DeliveryTag, Requeue: o.Requeue})
}

// settle sends the delivery's ack (m nil), nack or reject unless it is
// stale, and tells the settle hooks.
func (d *Delivery) settle(kind SettleKind, multiple, requeue bool, m proto.Method) *Promise[struct{}] {
	if d.ch == nil {
		if d.on != nil && d.on.record != nil { // NewTestDelivery
			err := d.on.record(Settlement{Delivery: d, DeliveryTag: d.DeliveryTag, Multiple: multiple, Kind: kind, Requeue: requeue, Count: 1})
			return settled(struct{}{}, err)
		}
		return settled(struct{}{}, ErrUnknownDeliveryTag) // not received from the broker
	}
	if err := d.stale(); err != nil {
		d.ch.settledHooks(d, Settlement{DeliveryTag: d.DeliveryTag, Multiple: multiple, Kind: kind, Requeue: requeue, Err: err})
		return settled(struct{}{}, err)
	}
	return d.ch.settle(d, kind, d.DeliveryTag, multiple, requeue, m)
}

// Channel is the channel the delivery arrived on; acknowledgements go there.
// It is nil for a Delivery not received from the broker.
func (d *Delivery) Channel() *Channel { return d.ch }

// GetResult is the outcome of Get: a delivery, or none when the queue was empty.
type GetResult struct {
	Delivery *Delivery // nil when the queue was empty
}

// Empty reports that the queue had no message.
func (g GetResult) Empty() bool { return g.Delivery == nil }

// Ack acknowledges deliveries received on this channel. It does not block
// and refuses locally (ErrUnknownDeliveryTag) a tag that is not outstanding.
func (ch *Channel) Ack(o ops.Ack) *Promise[struct{}] {
	return ch.settle(nil, SettleAck, o.DeliveryTag, o.Multiple, false, nil)
}

// Nack rejects deliveries received on this channel. It does not block.
func (ch *Channel) Nack(o ops.Nack) *Promise[struct{}] {
	return ch.settle(nil, SettleNack, o.DeliveryTag, o.Multiple, o.Requeue,
		&proto.BasicNack{DeliveryTag: o.DeliveryTag, Multiple: o.Multiple, Requeue: o.Requeue})
}

// Reject rejects one delivery received on this channel. It does not block.
func (ch *Channel) Reject(o ops.Reject) *Promise[struct{}] {
	return ch.settle(nil, SettleReject, o.DeliveryTag, false, o.Requeue, &proto.BasicReject{DeliveryTag: o.DeliveryTag, Requeue: o.Requeue})
}

// settle acknowledges and tells the settle hooks; d is the delivery when
// its own method was used.
func (ch *Channel) settle(d *Delivery, kind SettleKind, tag uint64, multiple, requeue bool, m proto.Method) *Promise[struct{}] {
	p, n := ch.acknowledge(tag, multiple, m)
	if ch.c.hooks != nil {
		ch.settledHooks(d, Settlement{DeliveryTag: tag, Multiple: multiple, Kind: kind, Requeue: requeue, Count: n, Err: p.Err()})
	}
	return p
}

// settledHooks runs the settle hooks, if any, on the caller's goroutine.
func (ch *Channel) settledHooks(d *Delivery, s Settlement) {
	if h := ch.c.hooks; h != nil && len(h.settle) > 0 {
		s.Channel = ch
		h.settled(d, s)
	}
}

// acknowledge checks the tag against the outstanding set and sends m, or
// basic.ack when m is nil. The check and the send happen under one lock so
// concurrent acks of one tag cannot both pass, and so the outstanding set
// tells the truth about what is queued before the ack.
func (ch *Channel) acknowledge(tag uint64, multiple bool, m proto.Method) (*Promise[struct{}], int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.mux().Err(); err != nil {
		return settled(struct{}{}, ch.ackRefused(err)), 0
	}
	var record *[]uint64
	if ch.tx {
		record = &ch.txAcked // a rollback makes these outstanding again
	}
	n := 0
	if multiple {
		n = ch.unacked.removeUpTo(tag, record)
	} else if ch.unacked.remove(tag, record) {
		n = 1
	}
	if n == 0 {
		return settled(struct{}{}, ErrUnknownDeliveryTag), 0
	}
	defer ch.notifySettledLocked() // after the ack is queued
	var err error
	if m == nil {
		// Cumulative: nothing at or below tag is left to ack, so mux may
		// merge this ack with the one queued before it. Not in transaction
		// mode, where a rollback makes acked tags outstanding again.
		cumulative := !ch.tx && (multiple || ch.unacked.noneUpTo(tag))
		err = ch.mux().Ack(mux.Ack{Tag: tag, Multiple: multiple, Cumulative: cumulative})
	} else {
		err = ch.mux().Call(&mux.Request{Method: m})
	}
	if err != nil {
		// The connection can end between the check above and the send.
		return settled(struct{}{}, ch.ackRefused(err)), 0
	}
	return ch.c.settledOK, n
}

// ackRefused names why an acknowledgement could not be sent. When the
// connection is gone and the client reconnects, the delivery is stale:
// the broker requeues it and redelivers it on the next connection. That
// holds also in the moment between the connection's end and the channel
// being told (ch.stale), and in the one between the connection refusing
// output and its Err being set (hence the look at err itself).
func (ch *Channel) ackRefused(err error) error {
	var ce *ConnectionError
	if ch.stale || ch.connectionLost() || (errors.As(err, &ce) && ch.c.reg.reconnects()) {
		return fmt.Errorf("%w: %w", ErrStaleDelivery, err)
	}
	return err
}

// Recover asks the broker to redeliver every unacknowledged delivery on
// this channel. It does not block.
func (ch *Channel) Recover(o ops.Recover) *Promise[struct{}] {
	return issue(ch, [2]string{}, &proto.BasicRecover{Requeue: o.Requeue}, func(proto.Method) struct{} {
		ch.mu.Lock()
		ch.unacked.clear() // every outstanding tag is void: redeliveries get new ones
		ch.txAcked = nil
		ch.notifySettledLocked()
		ch.mu.Unlock()
		return struct{}{}
	})
}

// Qos sets the prefetch limits (basic.qos). It does not block.
func (ch *Channel) Qos(o ops.Qos) *Promise[struct{}] {
	ch.mu.Lock()
	if o.PrefetchCount > 0 {
		ch.prefetch = max(ch.prefetch, int(o.PrefetchCount))
	}
	ch.mu.Unlock()
	return issue(ch, [2]string{}, &proto.BasicQos{PrefetchCount: o.PrefetchCount, PrefetchSize: o.PrefetchSize, Global: o.Global},
		func(proto.Method) struct{} {
			// Re-applied when the channel is re-opened, once the broker has
			// taken it: one it refused (RabbitMQ closes the connection over
			// a prefetch size, 540) would close every new connection too.
			q := o
			ch.mu.Lock()
			ch.qos[boolIndex(o.Global)] = &q
			ch.mu.Unlock()
			return struct{}{}
		})
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}
