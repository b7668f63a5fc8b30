package pool

import (
	"sync"

	"github.com/leveret-mq/leveret/internal/session"
)

// isolation re-sends, one at a time, client-level publishes suspected of
// having closed their channel when the broker's error did not say which
// publish it was. Alone on the isolation channel, a publish that fails
// again is the culprit and fails alone; the others are confirmed there.
// Everything here runs on the reader goroutine (channel ends and
// confirmations); mu only documents and guards the state.
type isolation struct {
	mu    sync.Mutex
	queue []*Publish
	busy  bool           // a suspect is in flight on ch
	ch    *pooledChannel // the isolation channel, opened when first needed
}

// isolate queues suspects for one-at-a-time re-sending.
func (p *Pool) isolate(pubs []*Publish) {
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
func (p *Pool) isolateNext() {
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
		pub.finish(p.notConfirmed(err))
	}
}

func (p *Pool) isolationChannel() (*pooledChannel, *session.Generation, error) {
	p.iso.mu.Lock()
	defer p.iso.mu.Unlock()
	g := p.current()
	if g == nil {
		return nil, nil, session.ErrOffline
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
