package leveret

import "fmt"

// Client.Consume consumers are the client's, not a channel's: the registry
// keeps them (registry.consumers) from Consume until they end, and starts each
// one again on every new connection, on a fresh channel of its own, with
// the same tag and Deliveries channel.

// addConsumer registers a Client.Consume consumer, so that a drop at any
// time from now on restarts it.
func (r *registry) addConsumer(cs *Consumer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended != nil {
		return r.ended
	}
	r.consumers[cs] = struct{}{}
	return nil
}

// forgetConsumer drops an ended consumer from the registry. A user's
// cancel (err nil) of the last recorded consumer of an auto-delete queue
// also forgets that queue: the broker deletes it then.
func (r *registry) forgetConsumer(cs *Consumer, err error) {
	r.mu.Lock()
	delete(r.consumers, cs)
	r.stopRetryLocked(cs)
	queue := cs.o.Queue
	others := false
	for other := range r.consumers {
		others = others || other.o.Queue == queue
	}
	r.mu.Unlock()
	if err == nil && !others {
		r.c.rec.LastConsumerGone(queue)
	}
}

// recoverConsumers starts every registered consumer on g, following
// renamed queues, and adds the outcome to rep. It runs on the supervisor,
// after g carries the recorded topology again.
func (c *Client) recoverConsumers(g *generation, rep *Recovery) {
	r := c.reg
	r.mu.Lock()
	list := make([]*Consumer, 0, len(r.consumers))
	for cs := range r.consumers {
		if name, ok := rep.Renamed[cs.o.Queue]; ok {
			cs.o.Queue = name
			cs.queueNow.Store(&name)
		}
		list = append(list, cs)
	}
	r.mu.Unlock()
	type start struct {
		cs     *Consumer
		answer *Promise[struct{}]
	}
	var starts []start
	for _, cs := range list {
		r.mu.Lock()
		r.stopRetryLocked(cs) // this start is its retry
		r.mu.Unlock()
		if answer := r.startOwn(cs); answer != nil {
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
