package leveret

import (
	"fmt"
	"time"
)

// A Client.Consume consumer that ran before a reconnect and whose restart
// the broker refuses (404: its queue is gone, declared by another service
// that has not declared it again yet; 403; 405) does not end: a service
// whose queues another service declares would otherwise lose its
// consumers at every broker restart. It is started again on a timer,
// consumerRetryFirst after the refusal and then at most every
// consumerRetryMax, until it works, the user cancels it (Cancel ends a
// waiting consumer at once) or the client closes; each refusal is
// reported in an EventConsumerRefused. The timers are the registry's: Close
// stops them and joins any callback under way (registry.retrying).

const (
	consumerRetryFirst = 100 * time.Millisecond
	// consumerRetryMax bounds the wait: a consumer resumes within about a
	// second of its queue being declared again.
	consumerRetryMax = time.Second
)

// retryDelay is the wait before the n-th retry, from 1: doubling from
// consumerRetryFirst up to consumerRetryMax.
func retryDelay(n int) time.Duration {
	d := consumerRetryFirst
	for i := 1; i < n && d < consumerRetryMax; i++ {
		d *= 2
	}
	return min(d, consumerRetryMax)
}

// retryConsumer arms cs's retry timer after a refused restart (err), and
// reports the refusal. It never blocks.
func (r *registry) retryConsumer(cs *Consumer, err error) {
	r.mu.Lock()
	if _, registered := r.consumers[cs]; !registered || r.ended != nil || cs.retry != nil {
		r.mu.Unlock()
		return
	}
	cs.retries++
	attempt, delay := cs.retries, retryDelay(cs.retries)
	r.retrying.Add(1)
	cs.retry = time.AfterFunc(delay, func() { r.retryFire(cs) }) // joined by Close through retrying
	r.mu.Unlock()
	r.c.emit(Event{Kind: EventConsumerRefused, Attempt: attempt, Delay: delay,
		Err: fmt.Errorf("amqp: restarting consumer %q on queue %q: %w", cs.tag, cs.queue(), err)})
}

// retryFire starts cs again on the current connection. With no
// connection, the supervisor restarts it on the next one.
func (r *registry) retryFire(cs *Consumer) {
	defer r.retrying.Done()
	r.mu.Lock()
	if cs.retry == nil { // stopped meanwhile
		r.mu.Unlock()
		return
	}
	cs.retry, cs.onGen = nil, nil
	r.mu.Unlock()
	r.startOwn(cs) // a refusal arms the timer again (startFailed)
}

// stopRetryLocked stops cs's retry timer, if armed. Callers hold r.mu.
func (r *registry) stopRetryLocked(cs *Consumer) {
	if cs.retry != nil && cs.retry.Stop() {
		r.retrying.Done()
	}
	cs.retry = nil
}
