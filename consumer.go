package leveret

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

var (
	// ErrConsumerCancelled is the cause of a consumer the broker cancelled,
	// for example because its queue was deleted.
	ErrConsumerCancelled = errors.New("amqp: consumer cancelled by the broker")
	// ErrConsumerOverflow is the cause of a consumer whose delivery buffer
	// filled up (only possible without a prefetch limit, or with NoAck).
	// leveret cancels it; deliveries that did not fit are rejected with
	// requeue unless the consumer was NoAck, in which case they are lost.
	ErrConsumerOverflow = errors.New("amqp: consumer buffer full; consumer cancelled")
)

var consumerSeq atomic.Uint64

// Consumer receives the deliveries of one basic.consume.
//
// Deliveries arrive on a buffered Go channel whose capacity is the
// prefetch count (or the client's consumer buffer, if larger); with a
// prefetch limit and manual acks the broker can never overfill it, so a
// slow consumer only slows itself. The channel is closed when the consumer
// ends: after Cancel, when the broker cancels it, or when its channel or
// connection closes. Err then says why.
type Consumer struct {
	ch         *Channel
	tag        string
	noAck      bool
	ownChannel bool // opened by Client.Consume: closed with the consumer

	deliveries chan *Delivery
	done       chan struct{}

	// Reader goroutine only.
	cancelling bool
	overflowed bool

	endOnce sync.Once
	err     error // written before done is closed
}

// Deliveries returns the stream of deliveries; read it with for range. It
// is closed when the consumer ends.
func (cs *Consumer) Deliveries() <-chan *Delivery { return cs.deliveries }

// Tag is the consumer tag.
func (cs *Consumer) Tag() string { return cs.tag }

// Channel is the channel the consumer runs on.
func (cs *Consumer) Channel() *Channel { return cs.ch }

// Done is closed when the consumer has ended.
func (cs *Consumer) Done() <-chan struct{} { return cs.done }

// Err is nil while the consumer runs and after a Cancel, else why it ended:
// ErrConsumerCancelled, ErrConsumerOverflow, or the channel's or
// connection's error.
func (cs *Consumer) Err() error {
	select {
	case <-cs.done:
		return cs.err
	default:
		return nil
	}
}

// Cancel stops the consumer (basic.cancel). It does not block: the promise
// settles when the broker confirms, after which no more deliveries come and
// the Deliveries channel is closed once drained. A consumer started with
// Client.Consume also closes its channel.
func (cs *Consumer) Cancel() *Promise[struct{}] {
	p := newPromise[struct{}]()
	err := cs.ch.mc.Call(&mux.Request{Method: &proto.BasicCancel{ConsumerTag: cs.tag}, Tag: cs.tag,
		Done: func(_ proto.Method, _ *ops.Message, err error) {
			cs.end(err) // nil after cancel-ok; else the channel's end is the cause
			p.resolve(struct{}{}, err)
		}})
	if err != nil {
		p.resolve(struct{}{}, err)
	}
	return p
}

// end closes the stream once. It runs on the reader goroutine (or on the
// issuing goroutine when basic.consume could not be sent, before any
// delivery could arrive), so it never races a send on deliveries.
func (cs *Consumer) end(err error) {
	cs.endOnce.Do(func() {
		cs.ch.mu.Lock()
		if cs.ch.consumers[cs.tag] == cs {
			delete(cs.ch.consumers, cs.tag)
		}
		cs.ch.mu.Unlock()
		cs.err = err
		// done before deliveries: a reader that sees the range end must
		// already see Err.
		close(cs.done)
		close(cs.deliveries)
		if cs.ownChannel {
			cs.ch.mc.Close(func(error) {})
		}
	})
}

// deliver hands d to the user without blocking the reader.
func (cs *Consumer) deliver(d *Delivery) {
	if !cs.overflowed {
		select {
		case cs.deliveries <- d:
			return
		default:
			cs.overflowed = true
			cs.ch.c.cfg.logger.Error("amqp: consumer buffer full; cancelling consumer", "consumer", cs.tag)
		}
	}
	// Over the bound: give it back rather than hold it or drop it.
	if !cs.noAck {
		cs.ch.Reject(ops.Reject{DeliveryTag: d.DeliveryTag, Requeue: true})
	}
	if !cs.cancelling {
		cs.cancelling = true
		cs.ch.mc.Call(&mux.Request{Method: &proto.BasicCancel{ConsumerTag: cs.tag}, Tag: cs.tag,
			Done: func(proto.Method, *ops.Message, error) { cs.end(ErrConsumerOverflow) }})
	}
}

// Consume starts a consumer on this channel. It does not block: the
// promise settles with the consumer once the broker confirms (deliveries
// may start flowing into its buffer at once). With o.Prefetch set, a
// basic.qos for this consumer goes out first.
func (ch *Channel) Consume(o ops.Consume) *Promise[*Consumer] {
	return ch.consume(o, false)
}

func (ch *Channel) consume(o ops.Consume, ownChannel bool) *Promise[*Consumer] {
	p := newPromise[*Consumer]()
	ch.consumeInto(p, o, ownChannel)
	return p
}

// consumeInto issues basic.consume (after basic.qos if o.Prefetch is set)
// and settles p with the consumer or the error. It never blocks.
func (ch *Channel) consumeInto(p *Promise[*Consumer], o ops.Consume, ownChannel bool) {
	tag := o.ConsumerTag
	if tag == "" {
		tag = fmt.Sprintf("leveret-%d", consumerSeq.Add(1))
	}
	ch.mu.Lock()
	if _, dup := ch.consumers[tag]; dup {
		ch.mu.Unlock()
		p.resolve(nil, fmt.Errorf("amqp: consumer tag %q already in use on this channel", tag))
		return
	}
	buffer := max(int(o.Prefetch), ch.prefetch, ch.c.cfg.consumerBuffer)
	cs := &Consumer{ch: ch, tag: tag, noAck: o.NoAck, ownChannel: ownChannel,
		deliveries: make(chan *Delivery, buffer), done: make(chan struct{})}
	ch.consumers[tag] = cs
	ch.mu.Unlock()

	fail := func(err error) {
		cs.end(err)
		p.resolve(nil, err)
	}
	if o.Prefetch > 0 {
		if err := ch.mc.Call(&mux.Request{Method: &proto.BasicQos{PrefetchCount: o.Prefetch},
			Done: func(proto.Method, *ops.Message, error) {}}); err != nil {
			fail(err)
			return
		}
	}
	err := ch.mc.Call(&mux.Request{
		Method: &proto.BasicConsume{Queue: o.Queue, ConsumerTag: tag, NoLocal: o.NoLocal, NoAck: o.NoAck, Exclusive: o.Exclusive, Arguments: o.Args},
		Tag:    tag,
		Done: func(_ proto.Method, _ *ops.Message, err error) {
			if err != nil {
				fail(err)
				return
			}
			p.resolve(cs, nil)
		}})
	if err != nil {
		fail(err)
	}
}

// Consume starts a consumer on a channel of its own, so its prefetch and
// its failures touch nothing else. The channel closes when the consumer
// ends. It does not block. basic.consume goes out once the client-level
// operations already issued on o.Queue (its declare, say) have completed,
// so a consumer may be started right behind the declare of its queue.
func (c *Client) Consume(o ops.Consume) *Promise[*Consumer] {
	ch, err := c.openChannel(nil)
	if err != nil {
		return settled[*Consumer](nil, err)
	}
	p := newPromise[*Consumer]()
	c.pool.afterPending(entityKey('q', o.Queue), func() { ch.consumeInto(p, o, true) })
	return p
}
