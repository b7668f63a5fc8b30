package confirm

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// Publisher publishes with confirms on a channel of its own. Its methods
// are safe for concurrent use; publishes from several goroutines are
// numbered in the order they reach the channel.
type Publisher struct {
	ch     *leveret.Channel
	window int

	// turn (capacity 1) is held while a publish takes its sequence number
	// and is handed to the channel, so numbers follow wire order. A channel
	// rather than a mutex so that waiting for it honours the context.
	turn chan struct{}

	// mu guards the rest. Publish takes it after turn; the handlers, on the
	// client's dispatcher goroutine, take it alone.
	mu       sync.Mutex
	pend     pending
	inflight int            // window slots taken: publishes not yet settled
	room     chan struct{}  // closed when slots free up; nil if nobody waits
	flushes  []*flushWaiter // ascending by upTo
	err      error          // why the channel ended; nil while it is open
	closing  bool           // Close was called: no new publishes

	// WithRepublish: what a lost connection left unconfirmed waits in
	// requeue for the republisher goroutine (owner: Publisher; started by
	// reopened, exits when requeue is empty or Close stops it; joined by
	// Close).
	republish   bool
	requeue     []slot
	republisher sync.WaitGroup
	running     bool
	ctx         context.Context // ends when Close begins: stops a re-send
	cancel      context.CancelFunc
}

type flushWaiter struct {
	upTo uint64     // wait until every publish numbered below this has settled
	done chan error // capacity 1: gets nil, or the error that ended the channel
}

// New opens a channel on c, puts it in confirm mode and waits, until ctx
// ends, for the broker to accept that (confirm.select-ok), so that every
// publish made afterwards counts.
func New(ctx context.Context, c *leveret.Client, opts ...Option) (*Publisher, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ch, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	p := &Publisher{ch: ch, window: cfg.window, turn: make(chan struct{}, 1), pend: newPending(),
		republish: cfg.republish}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	ch.OnReturn(p.onReturn)
	ch.OnConfirm(p.onConfirm)
	ch.OnClose(p.fail)
	ch.OnReopen(p.reopened)
	if _, err := ch.ConfirmSelect().Wait(ctx); err != nil {
		p.cancel()
		ch.Close(ctx) // queues channel.close; ctx may be over, so do not wait for it
		return nil, err
	}
	return p, nil
}

// Publish sends a message and returns the promise of its Outcome. It waits,
// honouring ctx, while the window is full, while another goroutine's
// publish is being handed to the channel, and while the connection's output
// buffer is full or the broker blocks publishing. If ctx ends first, or the
// publisher can no longer publish, the promise is already failed when
// Publish returns and nothing was sent: with ctx's error, leveret.ErrClosed
// after Close, or the error that ended the channel. The caller may reuse
// o.Message.Body as soon as Publish returns. A Mandatory publish carries
// its sequence number in the header SeqHeader, added to a copy of
// o.Message.Headers.
func (p *Publisher) Publish(ctx context.Context, o ops.Publish) *leveret.Promise[Outcome] {
	prom, settle := leveret.NewPromise[Outcome]()
	if err := p.acquire(ctx); err != nil {
		settle(Outcome{}, err)
		return prom
	}
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		p.mu.Lock()
		p.releaseLocked(1)
		p.mu.Unlock()
		settle(Outcome{}, ctx.Err())
		return prom
	}
	defer func() { <-p.turn }()

	// The publish is numbered before it is sent: its confirmation can arrive
	// before ch.Publish returns.
	p.mu.Lock()
	if err := p.stoppedLocked(); err != nil {
		p.releaseLocked(1)
		p.mu.Unlock()
		settle(Outcome{}, err)
		return prom
	}
	s := slot{settle: settle}
	if p.republish {
		s.msg = copyPublish(o)
	}
	seq := p.pend.pushSlot(s)
	p.mu.Unlock()
	if o.Mandatory {
		o.Message.Headers = withSeq(o.Message.Headers, seq)
	}

	// An error means the channel refused the publish before sending
	// anything (ctx ended while waiting for buffer room, or the channel had
	// ended): its number goes unused. Send rather than Publish: the write's
	// outcome is not needed (a failed write ends the channel, and OnClose
	// fails what is pending), so no promise is made for it.
	if err := p.ch.Send(ctx, o); err != nil {
		p.mu.Lock()
		if p.pend.dropNewest(seq) {
			p.releaseLocked(1)
		}
		p.mu.Unlock()
		settle(Outcome{}, err) // no effect if the channel's end failed it first
	}
	return prom
}

// PublishSync publishes and waits, until ctx ends, for the outcome. A
// nack or a return is an Outcome, not an error. Giving up on ctx does not
// withdraw the message: the broker may still take it.
func (p *Publisher) PublishSync(ctx context.Context, o ops.Publish) (Outcome, error) {
	return p.Publish(ctx, o).Wait(ctx)
}

// Flush waits until every publish issued before the call has settled (with
// any outcome), or ctx ends. It returns nil, ctx's error, or the error that
// ended the channel if it has ended (publishes unsettled then have failed;
// their promises say which).
func (p *Publisher) Flush(ctx context.Context) error {
	// Holding the turn, no publish is between numbering and sending: every
	// number below next went to the channel.
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	<-p.turn
	if p.err != nil {
		p.mu.Unlock()
		return p.err
	}
	upTo := p.pend.next
	if p.pend.lowestOpen() >= upTo {
		p.mu.Unlock()
		return nil
	}
	w := &flushWaiter{upTo: upTo, done: make(chan error, 1)}
	p.flushes = append(p.flushes, w)
	p.mu.Unlock()

	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		p.mu.Lock()
		if i := slices.Index(p.flushes, w); i >= 0 {
			p.flushes = slices.Delete(p.flushes, i, i+1)
		}
		p.mu.Unlock()
		return ctx.Err()
	}
}

// InFlight is the number of publishes issued and not yet settled (at most
// the window).
func (p *Publisher) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inflight
}

// Window is the most publishes that may await confirmation at once.
func (p *Publisher) Window() int { return p.window }

// Err is nil while the publisher's channel is open, then the reason it
// ended (an error wrapping leveret.ErrClosed after Close).
func (p *Publisher) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close stops new publishes (they fail with leveret.ErrClosed), waits until
// ctx ends for the ones in flight to settle, then closes the channel and
// waits for the broker to confirm that. Publishes still unsettled then fail
// with ErrNotConfirmed wrapping leveret.ErrClosed. Close returns ctx's error
// if it ran out, else nil; it is idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.cancel()
	p.republisher.Wait()
	// Flush's error is the channel's end (Err reports it) or ctx's. The
	// channel's close may still be confirmed in time with an ended ctx (a
	// settled promise answers before its ctx is looked at), so ctx running
	// out while publishes were in flight is reported from here.
	flushed := p.Flush(ctx)
	if err := p.ch.Close(ctx); err != nil {
		return err
	}
	if flushed != nil && ctx.Err() != nil {
		p.mu.Lock()
		if p.err == nil {
			p.err = errClosed
		}
		p.mu.Unlock()
		return ctx.Err()
	}
	// The channel has ended. Confirmations that came before its end may
	// still wait on the dispatcher, so the handler (OnClose) fails what is
	// left, after them; Err already says closed.
	p.mu.Lock()
	if p.err == nil {
		p.err = errClosed
	}
	p.mu.Unlock()
	return nil
}

// acquire takes a window slot, waiting for one until ctx ends.
func (p *Publisher) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	for {
		if err := p.stoppedLocked(); err != nil {
			p.mu.Unlock()
			return err
		}
		if p.inflight < p.window {
			p.inflight++
			p.mu.Unlock()
			return nil
		}
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
}

// stoppedLocked is why no publish may start now, or nil.
func (p *Publisher) stoppedLocked() error {
	switch {
	case p.err != nil:
		return p.err
	case p.closing:
		return errClosed
	}
	return nil
}

// releaseLocked frees n window slots and wakes those waiting for room once
// a sixteenth of the window is free. Waking them for every freed slot made
// a full window's publisher and the dispatcher take turns one message at a
// time, a wake-up each; now one wake-up lets a waiter publish a batch.
func (p *Publisher) releaseLocked(n int) {
	if n == 0 {
		return
	}
	p.inflight -= n
	if p.room != nil && p.inflight <= p.window-max(1, p.window/16) {
		close(p.room)
		p.room = nil
	}
}

// wakeFlushesLocked ends the Flush waits that are satisfied.
func (p *Publisher) wakeFlushesLocked() {
	low := p.pend.lowestOpen()
	i := 0
	for ; i < len(p.flushes) && p.flushes[i].upTo <= low; i++ {
		p.flushes[i].done <- nil
	}
	if i > 0 {
		p.flushes = append(p.flushes[:0], p.flushes[i:]...)
	}
}

// onReturn runs on the client's dispatcher goroutine. RabbitMQ sends a
// basic.return before the confirmation of the same publish, so the
// publish is still pending here; the confirmation will settle it as
// Returned.
func (p *Publisher) onReturn(r ops.Return) {
	seq, ok := takeSeq(&r.Message)
	if !ok {
		return // not published by this Publisher with Mandatory: cannot happen
	}
	p.mu.Lock()
	p.pend.attach(seq, &r)
	p.mu.Unlock()
}

// onConfirm runs on the client's dispatcher goroutine, in wire order.
func (p *Publisher) onConfirm(cf leveret.Confirmation) {
	st := Nacked
	if cf.Ack {
		st = Acked
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(p.pend.settle(cf.DeliveryTag, cf.Multiple, st))
	p.wakeFlushesLocked()
}

// fail is the channel's OnClose handler (on the dispatcher goroutine): it
// fails every unsettled publish with the cause and refuses new ones.
func (p *Publisher) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
	p.releaseLocked(p.pend.failAll(notConfirmed(err)))
	for _, w := range p.flushes {
		w.done <- err
	}
	p.flushes = nil
	if p.room != nil { // publishers waiting for room must see p.err
		close(p.room)
		p.room = nil
	}
}

// reopened is the channel's OnReopen handler (on the dispatcher, before
// any confirmation from the new connection): the publishes numbered up to
// lastTag that are still unsettled will never be confirmed. They are
// re-sent (WithRepublish) or fail as not confirmed; numbering goes on from
// lastTag+1, as the channel's confirmations do, so nothing drifts.
func (p *Publisher) reopened(lost error, lastTag uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	slots := p.pend.takeUpTo(lastTag)
	if !p.republish || p.closing || p.err != nil {
		for _, s := range slots {
			s.settle(Outcome{}, notConfirmed(lost))
		}
		p.releaseLocked(len(slots))
		p.wakeFlushesLocked()
		return
	}
	// Their window slots stay taken: they are still in flight.
	p.requeue = append(p.requeue, slots...)
	if !p.running && len(p.requeue) > 0 {
		p.running = true
		p.republisher.Add(1)
		go p.resend() // owner: Publisher; exits when requeue is empty or Close stops it.
	}
}

// resend re-sends the requeued publishes one at a time, each numbered
// like a new publish under the turn.
func (p *Publisher) resend() {
	defer p.republisher.Done()
	ctx := p.ctx
	for {
		select {
		case p.turn <- struct{}{}:
		case <-ctx.Done():
			p.failRequeued(errClosed)
			return
		}
		p.mu.Lock()
		if len(p.requeue) == 0 || p.err != nil {
			err := p.err
			p.running = false
			p.mu.Unlock()
			<-p.turn
			if err != nil {
				p.failRequeued(err)
			}
			return
		}
		s := p.requeue[0]
		p.requeue = p.requeue[1:]
		seq := p.pend.pushSlot(s)
		// A Flush waiting for it waits for its new number too.
		for _, w := range p.flushes {
			w.upTo = max(w.upTo, seq+1)
		}
		p.mu.Unlock()
		o := *s.msg
		if o.Mandatory {
			o.Message.Headers = withSeq(o.Message.Headers, seq)
		}
		err := p.ch.Send(ctx, o)
		if err != nil {
			p.mu.Lock()
			if p.pend.dropNewest(seq) {
				p.releaseLocked(1)
			}
			p.mu.Unlock()
			s.settle(Outcome{}, notConfirmed(err))
		}
		<-p.turn
	}
}

// failRequeued fails what still waits to be re-sent.
func (p *Publisher) failRequeued(err error) {
	p.mu.Lock()
	slots := p.requeue
	p.requeue = nil
	p.running = false
	for _, s := range slots {
		s.settle(Outcome{}, notConfirmed(err))
	}
	p.releaseLocked(len(slots))
	p.wakeFlushesLocked()
	p.mu.Unlock()
}

// copyPublish is a private copy of o for re-sending.
func copyPublish(o ops.Publish) *ops.Publish {
	c := o
	c.Message.Body = append([]byte(nil), o.Message.Body...)
	if o.Message.Headers != nil {
		c.Message.Headers = maps.Clone(o.Message.Headers)
	}
	return &c
}
