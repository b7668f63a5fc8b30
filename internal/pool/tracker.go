package pool

import (
	"sync"

	"github.com/leveret-mq/leveret/ops"
)

// pubTracker follows the client-level publishes on one pooled channel, in
// confirm mode since its open. Tags count from 1 in wire order: a publish
// takes its tag and is queued for the socket under mu.
type pubTracker struct {
	pool     *Pool
	isolated bool // the isolation channel: one suspect at a time

	mu    sync.Mutex
	next  uint64     // tag of the next publish
	first uint64     // tag of ents[0]
	ents  []*Publish // unconfirmed in tag order; nil once settled
	ended bool
	// requests counts the pool's topology operations awaiting a reply on
	// this channel. When the channel ends, those the broker discarded are
	// re-issued from their completions; the publishes to re-send wait in
	// stash until the last of them has been, so that a publish goes out
	// again behind the declare it was issued behind.
	requests int
	stash    []*Publish
	stashErr error

	scratch []*Publish // reader only: publishes one confirmation settles
}

// send queues pub on ch. It never waits for room; an error means nothing
// was sent.
func (t *pubTracker) send(ch *pooledChannel, pub *Publish) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return ch.mc.Err()
	}
	tag := t.next
	if pub.m.Mandatory {
		if pub.msg.Headers == nil {
			pub.msg.Headers = ops.Table{}
		}
		pub.msg.Headers[tagHeader] = int64(tag)
	}
	// pub.msg is the publish's private copy and never changes: its body can
	// be written from where it is rather than copied again. A pooled body
	// goes back only once this write, too, is done (see bodyHold).
	var written func(error)
	if pub.buf != nil {
		pub.hold.writing()
		written = pub.bodyWritten
	}
	sent, err := ch.mc.PublishShared(&pub.m, &pub.msg, written)
	if err != nil {
		if written != nil {
			pub.hold.notWritten()
		}
		return err
	}
	pub.sent = sent
	if len(t.ents) == 0 {
		t.first = tag
	}
	t.ents = append(t.ents, pub)
	t.next++
	return nil
}

// confirmed applies basic.ack or basic.nack. It runs on the reader, and
// settles outside mu: settling releases operations that waited for the
// publish, and those may publish on this very channel.
func (t *pubTracker) confirmed(tag uint64, multiple, ack bool) {
	t.mu.Lock()
	done := t.scratch[:0]
	if multiple {
		for len(t.ents) > 0 && t.first <= tag {
			if pub := t.ents[0]; pub != nil {
				done = append(done, pub)
			}
			t.popFront()
		}
	} else if tag >= t.first && tag-t.first < uint64(len(t.ents)) {
		if pub := t.ents[tag-t.first]; pub != nil {
			done = append(done, pub)
			t.ents[tag-t.first] = nil
		}
	}
	for len(t.ents) > 0 && t.ents[0] == nil {
		t.popFront()
	}
	idle := t.isolated && len(t.ents) == 0
	t.mu.Unlock()
	for i, pub := range done {
		pub.confirmed(ack)
		done[i] = nil
	}
	t.scratch = done[:0]
	if idle {
		t.pool.isolateNext()
	}
}

func (t *pubTracker) popFront() {
	t.ents[0] = nil
	t.ents = t.ents[1:]
	t.first++
	if len(t.ents) == 0 {
		t.ents = t.ents[:0:0] // let the backing array go
	}
}

// returned attaches a basic.return to its publish. It runs on the reader.
func (t *pubTracker) returned(r ops.Return) {
	tag, ok := takeTag(&r.Message)
	if !ok {
		return
	}
	t.mu.Lock()
	if tag >= t.first && tag-t.first < uint64(len(t.ents)) {
		if pub := t.ents[tag-t.first]; pub != nil {
			pub.ret = &r
		}
	}
	t.mu.Unlock()
}

func (t *pubTracker) requestStarted() {
	t.mu.Lock()
	t.requests++
	t.mu.Unlock()
}

// requestDone runs once a counted request has completed (and, if it was
// discarded, been re-issued); the last one on an ended channel re-sends
// the stashed publishes.
func (t *pubTracker) requestDone() {
	t.mu.Lock()
	t.requests--
	var stash []*Publish
	if t.requests == 0 && t.ended {
		stash, t.stash = t.stash, nil
	}
	cause := t.stashErr
	t.mu.Unlock()
	for _, pub := range stash {
		t.pool.resend(pub, cause)
	}
}

// resendAfterRequests re-sends pubs now, or after the requests still
// pending on the ended channel have been re-issued.
func (t *pubTracker) resendAfterRequests(pubs []*Publish, cause error) {
	t.mu.Lock()
	if t.requests > 0 {
		t.stash = append(t.stash, pubs...)
		t.stashErr = cause
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	for _, pub := range pubs {
		t.pool.resend(pub, cause)
	}
}

// end stops the tracker and returns what was not confirmed, in tag order,
// and whether topology operations were pending on the channel.
func (t *pubTracker) end() (unconfirmed []*Publish, requests bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = true
	requests = t.requests > 0
	for _, pub := range t.ents {
		if pub != nil {
			unconfirmed = append(unconfirmed, pub)
		}
	}
	t.ents = nil
	return unconfirmed, requests
}
