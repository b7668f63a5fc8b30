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
// reported in an EventConsumerRefused. The timers are the pool's: Close
// stops them and joins any callback under way (pool.retrying).

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
func (p *pool) retryConsumer(cs *Consumer, err error) {
	p.mu.Lock()
	if _, registered := p.consumers[cs]; !registered || p.ended != nil || cs.retry != nil {
		p.mu.Unlock()
		return
	}
	cs.retries++
	attempt, delay := cs.retries, retryDelay(cs.retries)
	p.retrying.Add(1)
	cs.retry = time.AfterFunc(delay, func() { p.retryFire(cs) }) // joined by Close through retrying
	p.mu.Unlock()
	p.c.emit(Event{Kind: EventConsumerRefused, Attempt: attempt, Delay: delay,
		Err: fmt.Errorf("amqp: restarting consumer %q on queue %q: %w", cs.tag, cs.queue(), err)})
}

// retryFire starts cs again on the current connection. With no
// connection, the supervisor restarts it on the next one.
func (p *pool) retryFire(cs *Consumer) {
	defer p.retrying.Done()
	p.mu.Lock()
	if cs.retry == nil { // stopped meanwhile
		p.mu.Unlock()
		return
	}
	cs.retry, cs.onGen = nil, nil
	p.mu.Unlock()
	p.startOwn(cs) // a refusal arms the timer again (startFailed)
}

// stopRetryLocked stops cs's retry timer, if armed. Callers hold p.mu.
func (p *pool) stopRetryLocked(cs *Consumer) {
	if cs.retry != nil && cs.retry.Stop() {
		p.retrying.Done()
	}
	cs.retry = nil
}
