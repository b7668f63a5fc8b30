package leveret

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/pool"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

var (
	// ErrConsumerCancelled is the cause of a consumer the broker cancelled,
	// for example because its queue was deleted.
	ErrConsumerCancelled = errors.New("amqp: consumer cancelled by the broker")
	// ErrConsumerOverflow is the cause of a consumer cancelled because more
	// deliveries waited for it than WithConsumerOverflowLimit allows (an
	// opt-in: by default a consumer's queue is not bounded). Deliveries past
	// the limit were rejected with requeue, or, for a NoAck consumer, dropped.
	ErrConsumerOverflow = errors.New("amqp: consumer overflow limit reached; consumer cancelled")
)

// Consumer receives the deliveries of one basic.consume.
//
// Deliveries arrive on a buffered Go channel. With a prefetch limit and
// manual acks its capacity is the prefetch count, which the broker can
// never overfill, so a slow consumer only slows itself; otherwise it is the
// client's consumer buffer (WithConsumerBuffer). When the broker sends more
// than fits (NoAck, or no prefetch limit), the rest wait in a queue of the
// consumer's own and move into the channel as the user reads: nothing is
// dropped. Past WithConsumerMemoryLimit of waiting deliveries the client
// reads the connection at most one frame a second until the user has read
// half of them (TCP backpressure: the broker holds the rest, and the
// connection's other channels slow down too); WithConsumerOverflowLimit opts
// in to dropping instead. The
// channel is closed when the consumer ends (after Cancel or Shutdown, when
// the broker cancels it, or when its channel or connection closes) and
// everything received before has been handed over. Err then says why.
type Consumer struct {
	c      *Client
	chp    atomic.Pointer[Channel] // the channel it runs on; replaced when a Client.Consume consumer is restarted
	tag    string
	noAck  bool
	own    bool // on a channel opened by Client.Consume, closed with the consumer
	hooked bool // the client has a DeliveryHook: deliveries go through the pump

	// A Client.Consume consumer is restarted on each new connection
	// (registry.startOwn). Guarded by registry.mu.
	o ops.Consume // what to send; Queue follows a server-named queue's renames
	// queueNow is o.Queue for readers outside registry.mu (the delivery hook,
	// once per delivery); stored with every change of o.Queue.
	queueNow atomic.Pointer[string]
	onGen    *generation         // the connection it was last started on
	retry    *time.Timer         // a refused restart waits for it (consumerretry.go)
	retries  int                 // refused restarts in a row
	started  *Promise[*Consumer] // Client.Consume's promise: settled by the first start that succeeds, or a failure

	deliveries chan *Delivery
	done       chan struct{}
	streamNext atomic.Int64 // a stream's offset to resume from, 0 if none seen (streamoffset.go)
	ran        atomic.Bool  // the broker confirmed a start of it once (consumerstart.go)

	// Reader goroutine only.
	cancelling bool

	// Deliveries that did not fit in the buffer. The reader sends on
	// deliveries only while no pump runs; the pump goroutine, while one
	// runs, sends and (if the consumer ended meanwhile) closes it.
	ovMu     sync.Mutex
	overflow []*Delivery
	ovBytes  int           // what the overflow holds, counted as deliveryCost
	drained  chan struct{} // made by a reader waiting for room; closed by the pump
	pumping  atomic.Bool   // written under ovMu; only the reader sets it, so it reads it without the lock
	ending   bool          // end has run: deliveries closes once the overflow is handed over

	endOnce sync.Once
	err     error // written before done is closed
}

// Deliveries returns the stream of deliveries; read it with for range. It
// is closed when the consumer ends.
func (cs *Consumer) Deliveries() <-chan *Delivery { return cs.deliveries }

// Tag is the consumer tag.
func (cs *Consumer) Tag() string { return cs.tag }

// Channel is the channel the consumer runs on. A Client.Consume consumer
// gets a new channel on each new connection (nil while it was never
// started); deliveries remember the channel they came on.
func (cs *Consumer) Channel() *Channel { return cs.chp.Load() }

func (cs *Consumer) channel() *Channel { return cs.chp.Load() }

// Done is closed when the consumer has ended.
func (cs *Consumer) Done() <-chan struct{} { return cs.done }

// Err is nil while the consumer runs and after a Cancel, else why it ended:
// ErrConsumerCancelled, ErrConsumerOverflow, or the channel's or
// connection's error. A Client.Consume consumer ends with a channel's or
// connection's error only when its first start fails or the client ends,
// and with ErrConsumerCancelled only when its queue is gone: otherwise it
// starts again on a fresh channel (see Client.Consume).
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
// the Deliveries channel is closed once drained. Deliveries already received
// can still be acknowledged: a consumer started with Client.Consume closes
// its channel only once every delivery it received has been acked, nacked
// or rejected (Shutdown bounds that wait).
func (cs *Consumer) Cancel() *Promise[struct{}] {
	p := newPromise[struct{}]()
	ch := cs.channel()
	if ch == nil || ch.mux().Err() != nil {
		if cs.waitsForConnection() {
			// Nothing runs on the broker: it ends here, and is not restarted.
			cs.end(nil)
			p.resolve(struct{}{}, nil)
			return p
		}
		if ch == nil {
			p.resolve(struct{}{}, cs.Err())
			return p
		}
	}
	err := ch.mux().Call(&mux.Request{Method: &proto.BasicCancel{ConsumerTag: cs.tag}, Tag: cs.tag,
		Done: func(_ proto.Method, _ *ops.Message, err error) {
			if err != nil && cs.waitsForConnection() {
				err = nil // the connection dropped under the cancel: nothing to restart
			}
			cs.end(err) // nil after cancel-ok; else the channel's end is the cause
			p.resolve(struct{}{}, err)
		}})
	if err != nil {
		if cs.waitsForConnection() {
			err = nil
		}
		cs.end(err)
		p.resolve(struct{}{}, err)
	}
	return p
}

// waitsForConnection reports whether cs is a Client.Consume consumer
// whose connection dropped and that the client will restart.
func (cs *Consumer) waitsForConnection() bool {
	if !cs.own || cs.Err() != nil {
		return false
	}
	ch := cs.channel()
	return (ch == nil || ch.mux().Err() != nil) && cs.c.reg.reconnects()
}

// Shutdown stops the consumer gracefully, blocking until ctx ends: it
// cancels it (no new deliveries), waits until every delivery it received
// has been acked, nacked or rejected (keep reading Deliveries and acking
// meanwhile), then, for a consumer started with Client.Consume, closes its
// channel and waits for the broker to confirm. On an explicit channel it
// waits until no delivery on that channel awaits acknowledgement and leaves
// the channel open. It returns nil when all of that happened, ctx's error if
// ctx ended first (the channel is closed anyway, and the broker requeues
// what was not acknowledged), or the consumer's error if it had already
// ended another way.
func (cs *Consumer) Shutdown(ctx context.Context) error {
	select {
	case <-cs.done: // already ended: by a Cancel, or on its own
		if cs.err != nil {
			return cs.err
		}
	default:
		if _, err := cs.Cancel().Wait(ctx); err != nil {
			if ctx.Err() == nil {
				return cs.endErr(err)
			}
			cs.closeOwn()
			return err
		}
	}
	ch := cs.channel()
	if ch == nil {
		return nil // never started: nothing received, nothing to close
	}
	err := ch.waitSettled(ctx)
	if cs.own {
		// The close may already be under way (a cancelled consumer's channel
		// closes once settled): wait for the channel's end either way.
		cerr := ch.Close(ctx)
		if cerr == nil {
			select {
			case <-ch.Done():
			case <-ctx.Done():
				cerr = ctx.Err()
			}
		}
		if err == nil {
			err = cerr
		}
	}
	return err
}

// endErr is the error Shutdown reports for a consumer that ended by
// itself: its own cause if it has one, else err.
func (cs *Consumer) endErr(err error) error {
	if e := cs.Err(); e != nil {
		return e
	}
	return err
}

func (cs *Consumer) closeOwn() {
	if ch := cs.channel(); cs.own && ch != nil {
		ch.mux().Close(func(error) {})
	}
}

// end ends the consumer once. It runs on the reader goroutine (or on the
// issuing goroutine when basic.consume could not be sent, before any
// delivery could arrive).
func (cs *Consumer) end(err error) {
	cs.endOnce.Do(func() {
		if ch := cs.channel(); ch != nil {
			ch.mu.Lock()
			if ch.consumers[cs.tag] == cs {
				delete(ch.consumers, cs.tag)
			}
			if cs.own && err == nil {
				// Cancelled by the user: the channel stays until what was
				// received is acknowledged (see Channel.notifySettledLocked).
				ch.closeWhenSettled = true
				ch.notifySettledLocked()
			}
			ch.mu.Unlock()
		}
		if cs.own {
			cs.c.reg.forgetConsumer(cs, err)
		}
		if err != nil {
			// Cancelled by the broker or on overflow, or the channel ended:
			// its channel's close is queued before Done closes, so an ack
			// made after Done fails locally instead of racing the close.
			cs.closeOwn()
		}
		cs.err = err
		// done before deliveries: a reader that sees the range end must
		// already see Err.
		close(cs.done)
		cs.ovMu.Lock()
		cs.ending = true
		if !cs.pumping.Load() {
			close(cs.deliveries)
		}
		cs.ovMu.Unlock()
	})
}

// deliver hands d to the user without blocking the reader: into the
// buffer if there is room, else onto the overflow queue, which a pump
// goroutine moves into the buffer as the user reads.
func (cs *Consumer) deliver(d *Delivery) {
	// Before the hand-over: from then on d is the user's. A delivery the
	// overflow limit turns away ends the consumer, which never restarts.
	cs.noteStreamOffset(d)
	if !cs.pumping.Load() && !cs.hooked {
		// No pump runs, and none starts unless this goroutine starts it:
		// the buffer is the reader's alone. (With a DeliveryHook every
		// delivery goes through the pump, which runs the hook: the reader
		// never runs user code.)
		select {
		case cs.deliveries <- d:
			return
		default:
		}
	}
	cs.ovMu.Lock()
	if limit := cs.c.cfg.overflowLimit; limit >= 0 && len(cs.overflow) >= limit {
		cs.ovMu.Unlock()
		cs.overflowed(d)
		return
	}
	cs.overflow = append(cs.overflow, d)
	d.cost = deliveryCost(d)
	cs.ovBytes += d.cost
	start := !cs.pumping.Load()
	cs.pumping.Store(true)
	var wait chan struct{}
	if cs.ovBytes > cs.c.cfg.consumerMemory {
		// Past the memory limit: hold the reader, which stops reading the
		// socket, so the broker holds the rest (TCP backpressure), until
		// the user has read half of it.
		if cs.drained == nil {
			cs.drained = make(chan struct{})
		}
		wait = cs.drained
	}
	cs.ovMu.Unlock()
	if start {
		cs.c.startPump(cs)
	}
	if wait != nil {
		// At most memoryWait, then one more frame: a reply the user's loop
		// waits for (a confirm, say) still gets through, slowly, instead
		// of the loop and the reader waiting for each other forever.
		cs.channel().generation().Conn.HoldReader(func() {
			t := time.NewTimer(memoryWait)
			defer t.Stop()
			select {
			case <-wait:
			case <-cs.c.closing:
			case <-t.C:
			}
		})
	}
}

// memoryWait is how long the reader waits for a consumer over its memory
// limit before it reads one more frame.
const memoryWait = time.Second

// deliveryCost is what a waiting delivery is counted as against the
// consumer's memory limit: its body, its headers as decoded (which can be
// many times their size on the wire) and about the rest of its size.
func deliveryCost(d *Delivery) int { return len(d.Body) + 300 + proto.TableMemory(d.Headers) }

// overflowed handles a delivery past WithConsumerOverflowLimit: given back
// (or, NoAck, dropped), and the consumer cancelled.
func (cs *Consumer) overflowed(d *Delivery) {
	if cs.noAck {
		cs.c.cfg.logger.Error("amqp: consumer overflow limit reached; delivery dropped", "consumer", cs.tag)
	} else {
		d.ch.Reject(ops.Reject{DeliveryTag: d.DeliveryTag, Requeue: true})
	}
	if !cs.cancelling {
		cs.cancelling = true
		d.ch.mux().Call(&mux.Request{Method: &proto.BasicCancel{ConsumerTag: cs.tag}, Tag: cs.tag,
			Done: func(proto.Method, *ops.Message, error) { cs.end(ErrConsumerOverflow) }})
	}
}

// pump moves the overflow into the buffer as the user reads it. It runs on
// its own goroutine (see Client.startPump) and exits once the overflow is
// empty, or when the client closes.
func (cs *Consumer) pump(stop <-chan struct{}) {
	for {
		cs.ovMu.Lock()
		if len(cs.overflow) == 0 || stopped(stop) {
			cs.overflow, cs.ovBytes = nil, 0
			cs.wakeReaderLocked()
			cs.pumping.Store(false)
			if cs.ending {
				close(cs.deliveries)
			}
			cs.ovMu.Unlock()
			return
		}
		d := cs.overflow[0]
		cs.overflow[0] = nil
		cs.overflow = cs.overflow[1:]
		if cs.ovBytes -= d.cost; cs.ovBytes <= cs.c.cfg.consumerMemory/2 {
			cs.wakeReaderLocked()
		}
		cs.ovMu.Unlock()
		if cs.hooked {
			cs.c.hooks.delivered(d, cs)
		}
		select {
		case cs.deliveries <- d:
		case <-stop:
		}
	}
}

// wakeReaderLocked lets a reader held by the memory limit go on.
func (cs *Consumer) wakeReaderLocked() {
	if cs.drained != nil {
		close(cs.drained)
		cs.drained = nil
	}
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// Consume starts a consumer on this channel. It does not block: the
// promise settles with the consumer once the broker confirms (deliveries
// may start flowing into its buffer at once). With o.Prefetch set, a
// basic.qos for this consumer goes out first. The consumer ends with its
// channel; when the channel is re-opened after a reconnect, the consumer is
// started again on it with the same tag and Deliveries channel.
func (ch *Channel) Consume(o ops.Consume) *Promise[*Consumer] {
	p := newPromise[*Consumer]()
	ch.mu.Lock()
	prefetch := ch.prefetch
	ch.mu.Unlock()
	cs := ch.c.newConsumer(o, false, prefetch)
	ch.startConsumer(cs, o, func(err error) {
		if err != nil {
			p.resolve(nil, err)
			return
		}
		p.resolve(cs, nil)
	})
	return p
}

// newConsumer makes the consumer of o, not yet started. With a prefetch
// limit (the consumer's or its channel's) and manual acks the broker sends
// at most that many unacknowledged deliveries: that is the buffer, and no
// slot more (1,000 consumers with prefetch 10 cost 10 slots each, not
// 1,024). Others get the client's consumer buffer; what does not fit waits
// in the overflow queue, so a small buffer never loses a delivery.
func (c *Client) newConsumer(o ops.Consume, own bool, chPrefetch int) *Consumer {
	if o.ConsumerTag == "" {
		o.ConsumerTag = fmt.Sprintf("leveret-%d", c.consumerSeq.Add(1))
	}
	buffer := c.cfg.consumerBuffer
	if limit := max(int(o.Prefetch), chPrefetch); limit > 0 && !o.NoAck {
		buffer = limit
	}
	cs := &Consumer{c: c, tag: o.ConsumerTag, noAck: o.NoAck, own: own, o: o,
		hooked:     c.hooks != nil && len(c.hooks.delivery) > 0,
		deliveries: make(chan *Delivery, buffer), done: make(chan struct{})}
	cs.queueNow.Store(&o.Queue)
	return cs
}

// queue is the queue the consumer reads now (a server-named one is renamed
// at recovery). It takes no lock.
func (cs *Consumer) queue() string { return *cs.queueNow.Load() }

// startConsumer issues basic.consume for cs on ch (after basic.qos if
// o.Prefetch is set) and reports the broker's answer to done: nil on
// consume-ok. It never blocks. What a failure means for cs is
// startFailed's to decide.
func (ch *Channel) startConsumer(cs *Consumer, o ops.Consume, done func(error)) {
	ch.mu.Lock()
	if _, dup := ch.consumers[cs.tag]; dup {
		ch.mu.Unlock()
		err := fmt.Errorf("amqp: consumer tag %q already in use on this channel", cs.tag)
		cs.end(err)
		done(err)
		return
	}
	ch.consumers[cs.tag] = cs
	cs.chp.Store(ch)
	ch.mu.Unlock()

	qos, consume := cs.startRequests(o, done)
	for _, r := range []*mux.Request{qos, consume} {
		if r == nil {
			continue
		}
		if err := ch.mux().Call(r); err != nil {
			cs.startFailed(err)
			done(err)
			return
		}
	}
}

// Consume starts a consumer on a channel of its own, so its prefetch and
// its failures touch nothing else. The channel closes when the consumer
// ends (after Cancel, once what it received is acknowledged). It does not
// block. basic.consume goes out once the client-level operations already
// issued on o.Queue (its declare, say) have completed, so a consumer may be
// started right behind the declare of its queue.
//
// The consumer survives reconnects: on each new connection it is started
// again, after the recorded topology, with the same tag, and keeps
// delivering on the same Deliveries channel (a server-named queue it
// consumes from is followed to its new name). Deliveries received before a
// reconnect can no longer be acknowledged (ErrStaleDelivery): the broker
// requeued them and delivers them again. If the broker refuses the restart
// (its queue is gone, say: declared by another service that has not
// declared it again yet), the consumer does not end: it is tried again,
// 100 ms after the refusal and then at most every second, until it works,
// and each refusal is reported (EventConsumerRefused); its Err stays nil
// and its Deliveries channel open. The same holds when the broker closes
// the consumer's channel while it runs (a channel error such as 406: a
// delivery held past the consumer timeout, on RabbitMQ 3.x, 4.0 and
// classic queues), or cancels the consumer (basic.cancel) while its queue
// is still there (RabbitMQ 4.3 does so on a quorum queue's consumer
// timeout): it starts again on a fresh channel, the deliveries it held go
// back to the queue (their acks fail with ErrStaleDelivery), and the
// event is reported the same way. A consumer ends only when it is
// cancelled by the user, the broker cancels it because its queue is gone
// (ErrConsumerCancelled: a passive declare after the basic.cancel finds no
// queue), the client closes, or its first start fails. A
// consumer of a stream queue resumes at the offset after the last
// delivery it handed over (from each delivery's x-stream-offset header),
// whatever x-stream-offset o.Args first asked for: no gap, no duplicate.
func (c *Client) Consume(o ops.Consume) *Promise[*Consumer] {
	p := newPromise[*Consumer]()
	cs := c.newConsumer(o, true, 0)
	cs.started = p
	if err := c.reg.addConsumer(cs); err != nil {
		cs.end(err)
		p.resolve(nil, err)
		return p
	}
	c.pool.AfterPending(pool.Key('q', o.Queue), func() { c.reg.startOwn(cs) })
	return p
}
