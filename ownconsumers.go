package leveret

import (
	"errors"
	"fmt"

	"github.com/leveret-mq/leveret/internal/proto"
)

// Client.Consume consumers are the client's, not a channel's: the pool
// keeps them (pool.consumers) from Consume until they end, and starts each
// one again on every new connection, on a fresh channel of its own, with
// the same tag and Deliveries channel.

// addConsumer registers a Client.Consume consumer, so that a drop at any
// time from now on restarts it.
func (p *pool) addConsumer(cs *Consumer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended != nil {
		return p.ended
	}
	p.consumers[cs] = struct{}{}
	return nil
}

// forgetConsumer drops an ended consumer from the registry. A user's
// cancel (err nil) of the last recorded consumer of an auto-delete queue
// also forgets that queue: the broker deletes it then.
func (p *pool) forgetConsumer(cs *Consumer, err error) {
	p.mu.Lock()
	delete(p.consumers, cs)
	p.stopRetryLocked(cs)
	queue := cs.o.Queue
	others := false
	for other := range p.consumers {
		others = others || other.o.Queue == queue
	}
	p.mu.Unlock()
	if err == nil && !others {
		p.c.rec.lastConsumerGone(queue)
	}
}

// startOwn starts cs on a fresh channel of the current connection, unless
// it already runs there, has ended, or no connection is ready (then the
// supervisor starts it once one is). It returns the broker's answer, or
// nil if it sent nothing. It never blocks.
func (p *pool) startOwn(cs *Consumer) *Promise[struct{}] { return p.startOwnThen(cs, nil) }

// startOwnThen is startOwn that also calls then (if set, on the reader or
// this goroutine, without blocking) with the outcome of a start it sent.
func (p *pool) startOwnThen(cs *Consumer, then func(error)) *Promise[struct{}] {
	p.mu.Lock()
	g := p.gen.Load()
	_, registered := p.consumers[cs]
	if !registered || g == nil || cs.onGen == g {
		p.mu.Unlock()
		return nil
	}
	cs.onGen = g
	o := cs.restartOptions(cs.o)
	p.mu.Unlock()
	answer := newPromise[struct{}]()
	ch, err := p.c.openChannel(g, nil)
	if err != nil {
		if connLost(err) && cs.waitsForConnection() {
			// Lost before the supervisor noticed: it restarts cs.
			p.retryLater(g, err, func() { p.startOwn(cs) }, cs.end)
			return nil
		}
		if !cs.restarting.Load() {
			cs.end(err)
			cs.started.resolve(nil, err)
		}
		answer.resolve(struct{}{}, err)
		if then != nil {
			then(err)
		}
		return answer
	}
	ch.startConsumer(cs, o, func(err error) {
		if err == nil {
			cs.started.resolve(cs, nil)
		} else if !cs.waitsForConnection() && !cs.restarting.Load() {
			cs.started.resolve(nil, err)
		}
		answer.resolve(struct{}{}, err)
		if then != nil {
			then(err)
		}
	})
	return answer
}

// recoverConsumers starts every registered consumer on g, following
// renamed queues, and adds the outcome to rep. It runs on the supervisor,
// after g carries the recorded topology again.
func (c *Client) recoverConsumers(g *generation, rep *Recovery) {
	p := c.pool
	p.mu.Lock()
	list := make([]*Consumer, 0, len(p.consumers))
	for cs := range p.consumers {
		if name, ok := rep.Renamed[cs.o.Queue]; ok {
			cs.o.Queue = name
			cs.queueNow.Store(&name)
		}
		list = append(list, cs)
	}
	p.mu.Unlock()
	type started struct {
		cs     *Consumer
		answer *Promise[struct{}]
	}
	var waits []started
	for _, cs := range list {
		p.mu.Lock()
		p.stopRetryLocked(cs) // this start is its retry
		p.mu.Unlock()
		// Only one that ran before may be refused for a passing reason.
		cs.restarting.Store(cs.started.isSettled() && cs.Err() == nil)
		if answer := p.startOwn(cs); answer != nil {
			waits = append(waits, started{cs, answer})
		} else {
			cs.restarting.Store(false)
		}
	}
	for try := 0; len(waits) > 0; try++ {
		var again []started
		for _, w := range waits {
			_, err := waitRecovery(c, w.answer)
			if err == nil {
				w.cs.restarting.Store(false)
				rep.Consumers++
				continue
			}
			if w.cs.restarting.Load() && try < refusedRetries && restartMayPass(err) && g.conn.Err() == nil {
				again = append(again, w)
				continue
			}
			if w.cs.restarting.Load() && !connLost(err) {
				// It ran before and the broker refused it now: its queue may
				// come back. Tried again until it works (consumerretry.go).
				p.retryConsumer(w.cs, err)
				rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering consumer %q on queue %q (tried again): %w", w.cs.tag, w.cs.queue(), err))
				continue
			}
			if w.cs.restarting.Swap(false) && (!connLost(err) || !w.cs.waitsForConnection()) {
				w.cs.end(err) // startConsumer left that to this loop
			}
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering consumer %q on queue %q: %w", w.cs.tag, w.cs.o.Queue, err))
		}
		closing := len(again) > 0 && sleepCtx(c.supCtx, refusedRetryEvery) != nil
		waits = waits[:0]
		for _, w := range again {
			if closing { // Close ends the consumer
				w.cs.restarting.Store(false)
				continue
			}
			p.mu.Lock()
			w.cs.onGen = nil // start it again on g
			p.mu.Unlock()
			if answer := p.startOwn(w.cs); answer != nil {
				waits = append(waits, started{w.cs, answer})
			} else {
				w.cs.restarting.Store(false) // g dropped, or it ended meanwhile
			}
		}
	}
}

// A consumer that ran before the drop can be refused for a moment on the
// new connection while the cluster settles: RabbitMQ answers basic.consume
// on a stream with 406 "does not have a replica on the local node" until
// the stream's members are known again after a node loss. Such a restart
// is tried again like any refused recovery step (refusedRetryEvery,
// refusedRetries); the consumer keeps its Deliveries channel meanwhile.
//
// restartMayPass reports whether a restart refused with err may pass when
// tried again: a 406 to a consume that passed before (a lasting cause
// such as a missing prefetch would have failed the first start).
func restartMayPass(err error) bool {
	var ce *ChannelError
	return errors.As(err, &ce) && ce.Code == ReplyCode(proto.PreconditionFailed)
}
