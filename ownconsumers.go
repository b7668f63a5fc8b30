package leveret

import "fmt"

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
		p.c.rec.LastConsumerGone(queue)
	}
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
	type start struct {
		cs     *Consumer
		answer *Promise[struct{}]
	}
	var starts []start
	for _, cs := range list {
		p.mu.Lock()
		p.stopRetryLocked(cs) // this start is its retry
		p.mu.Unlock()
		if answer := p.startOwn(cs); answer != nil {
			starts = append(starts, start{cs, answer})
		}
	}
	for _, st := range starts {
		_, err := waitRecovery(c, st.answer)
		switch {
		case err == nil:
			rep.Consumers++
		case !connLost(err):
			// Ended, or tried again (consumerretry.go): startFailed decided.
			again := ""
			if st.cs.Err() == nil {
				again = " (tried again)"
			}
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering consumer %q on queue %q%s: %w", st.cs.tag, st.cs.queue(), again, err))
		}
	}
}
