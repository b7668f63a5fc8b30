package leveret

import (
	"context"
	"sync"
)

// isolation re-sends, one at a time, client-level publishes suspected of
// having closed their channel when the broker's error did not say which
// publish it was. Alone on the isolation channel, a publish that fails
// again is the culprit and fails alone; the others are confirmed there.
// Everything here runs on the reader goroutine (channel ends and
// confirmations); mu only documents and guards the state.
type isolation struct {
	mu    sync.Mutex
	queue []*clientPub
	busy  bool           // a suspect is in flight on ch
	ch    *pooledChannel // the isolation channel, opened when first needed
}

// isolate queues suspects for one-at-a-time re-sending.
func (p *pool) isolate(pubs []*clientPub) {
	p.iso.mu.Lock()
	p.iso.queue = append(p.iso.queue, pubs...)
	start := !p.iso.busy
	p.iso.mu.Unlock()
	if start {
		p.isolateNext()
	}
}

// isolateNext sends the next suspect, once the previous one has settled
// or left the isolation channel.
func (p *pool) isolateNext() {
	for {
		p.iso.mu.Lock()
		if len(p.iso.queue) == 0 {
			p.iso.busy = false
			p.iso.queue = nil
			p.iso.mu.Unlock()
			return
		}
		pub := p.iso.queue[0]
		p.iso.queue = p.iso.queue[1:]
		p.iso.busy = true
		p.iso.mu.Unlock()
		err := p.sendVia(pub, p.isolationChannel)
		switch {
		case err == nil:
			return
		case err == errParked:
			continue // re-sent on the next connection like any publish
		}
		pub.finish(notConfirmed(err))
	}
}

func (p *pool) isolationChannel() (*pooledChannel, *generation, error) {
	p.iso.mu.Lock()
	defer p.iso.mu.Unlock()
	g := p.current()
	if g == nil {
		return nil, nil, errOffline
	}
	if ch := p.iso.ch; ch != nil && ch.gen == g && ch.mc.Err() == nil {
		return ch, g, nil
	}
	ch, err := p.openConfirmed(g, &pubTracker{pool: p, isolated: true, next: 1})
	if err != nil {
		return nil, g, err
	}
	p.iso.ch = ch
	return ch, g, nil
}

// pubBudget bounds the bytes held by unconfirmed client-level publishes
// (their private copies). Publish waits for room, honouring its ctx.
type pubBudget struct {
	mu    sync.Mutex
	limit int
	used  int
	room  chan struct{} // closed when room frees up; nil if nobody waits
}

// acquire takes n bytes, waiting until ctx ends. A publish larger than the
// whole limit goes alone.
func (b *pubBudget) acquire(ctx context.Context, n int) error {
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.limit {
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.mu.Lock()
	}
	b.used += n
	b.mu.Unlock()
	return nil
}

// release gives n bytes back. Waiters wake once a sixteenth of the limit
// is free, so that one wake-up lets a waiter publish a batch.
func (b *pubBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	if b.room != nil && (b.used == 0 || b.used <= b.limit-b.limit/16) {
		close(b.room)
		b.room = nil
	}
	b.mu.Unlock()
}
