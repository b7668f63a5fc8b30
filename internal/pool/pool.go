// Package pool runs a client's client-level operations (topology
// operations and Client.Publish) on a few channels of the client's own,
// in confirm mode: ordered per entity, pipelined, re-issued when a
// failure in front of them discarded them, parked while the client
// reconnects (through the client's session.Gate), and isolated when the
// broker's close does not say which one it meant. It never imports the
// root package: it calls up through Owner and Settler.
package pool

import (
	"hash/maphash"
	"sync"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/internal/topology"
	"github.com/leveret-mq/leveret/ops"
)

// maxReissues bounds how often one pooled operation is re-sent after
// operations in front of it failed; each re-send follows a distinct failure.
const maxReissues = 8

// Pool spreads client-level operations over a few of the client's own
// channels. An operation goes to the channel its first entity hashes to, so
// operations on one queue or exchange stay in order on one channel. An
// operation that also names an entity with an operation still pending on
// another channel (a bind after its exchange's declare, a publish after
// the bind) is sent once that operation has completed. When the broker
// closes a pooled channel, the operations it discarded are re-issued on a
// fresh one, so only the failing operation fails.
//
// Its methods never block, except Publish (for room, under its ctx).
// Completions run on the issuing goroutine or the reader's, with no lock of
// the pool held.
type Pool struct {
	owner Owner
	errs  Errors
	rec   *topology.Record
	seed  maphash.Seed

	budget pubBudget // bytes held by unconfirmed client-level publishes
	iso    isolation // suspects of a failed publish, re-sent one at a time

	// gate is where operations go: the current connection, or parked
	// until the next one is ready.
	gate *session.Gate[*session.Generation]

	mu        sync.Mutex
	chans     []*pooledChannel      // replaced when they end
	last      map[string]*operation // latest unfinished operation per entity key
	rr        int                   // round robin for operations naming no entity
	suspects  []*operation          // to re-send one at a time (suspects.go)
	isolating bool                  // a suspect is in flight or waits for a connection
}

// Done is a pooled operation's completion: the broker's reply (and the
// message it carried, for none of the pool's operations today), or err.
type Done func(reply proto.Method, msg *ops.Message, err error)

type operation struct {
	m        proto.Method
	pub      *Publish // a Client.Publish (m is nil); settled on its confirmation
	keys     [2]string
	slot     int
	done     Done
	reissued int
	run      func() // instead of sending: a callback waiting for an entity (afterPending)
	// suspected: a connection close could mean it (mux.Suspect); it is
	// re-sent alone (isolated), and fails if the next close means it too.
	suspected, isolated bool

	// Guarded by pool.mu.
	sent    bool           // on its channel: later operations there queue behind it
	ch      *pooledChannel // the channel it was last sent on
	direct  bool           // ready when issued: its issuing goroutine sends it
	waiting int            // operations this one waits for
	after   []*operation   // operations waiting for this one to finish
	// afterSent are operations on its channel waiting only for it to be
	// sent (or to finish): from then on channel order keeps them behind it.
	afterSent []*operation
	// behind are unfinished operations on its entities that it relies on
	// channel order to follow (see waitsBehind).
	behind   [2]*operation
	behindCh [2]*pooledChannel // behind[i].ch when recorded: the usual case, unchanged, needs no lock
	finished bool
}

// New makes a pool; it opens its channels when first used.
func New(cfg Config) *Pool {
	return &Pool{owner: cfg.Owner, errs: cfg.Errors, rec: cfg.Record, seed: maphash.MakeSeed(),
		chans: make([]*pooledChannel, cfg.Channels), last: make(map[string]*operation),
		budget: pubBudget{limit: cfg.UnconfirmedLimit}, gate: cfg.Gate}
}

// Issue sends m, ordered by the entities keys name (see Key), and calls
// done with its reply. It never blocks. A method lost with its connection
// goes out again on the next one (declarations, binds and deletes are
// idempotent); one the broker closed the connection over fails with that
// error and is not sent again.
func (p *Pool) Issue(keys [2]string, m proto.Method, done Done) {
	op := &operation{m: m, keys: keys, done: done}
	p.mu.Lock()
	ready := p.enlistLocked(op)
	p.mu.Unlock()
	if ready {
		p.send(op)
	}
}

// deleteSlot carries every client-level delete. RabbitMQ 3.10 can crash a
// channel (541, closing the connection) or a queue when bound entities are
// deleted at once on different channels; one channel runs them serially,
// still pipelined.
const deleteSlot = 0

// enlistLocked records op as the latest operation on its entities and
// reports whether it may be sent now.
func (p *Pool) enlistLocked(op *operation) bool {
	switch op.m.(type) {
	case *proto.QueueDelete, *proto.ExchangeDelete:
		op.slot = deleteSlot
	default:
		op.slot = p.slotLocked(op.keys[0])
	}
	for i, k := range op.keys {
		if k == "" {
			continue
		}
		// Wait for an unfinished operation on the same entity unless it is
		// on this channel, where channel order suffices: sent already, or
		// being sent by the goroutine that issued it (then op was issued
		// concurrently with it, so either order is right). One that waits
		// for another entity is sent later, from elsewhere: wait until it
		// has been sent.
		switch prev := p.last[k]; {
		case prev == nil:
		case prev.slot != op.slot:
			prev.after = append(prev.after, op)
			op.waiting++
		case !prev.sent && !prev.direct:
			// Waiting itself, on this channel: op goes out once it has.
			prev.afterSent = append(prev.afterSent, op)
			op.waiting++
		case prev.sent:
			op.behind[i], op.behindCh[i] = prev, prev.ch
		}
		p.last[k] = op
	}
	op.direct = op.waiting == 0
	return op.direct
}

func (p *Pool) slotLocked(key string) int {
	if key == "" {
		p.rr++
		return p.rr % len(p.chans)
	}
	return int(maphash.String(p.seed, key) % uint64(len(p.chans)))
}

// AfterPending runs fn once the client-level operations issued so far on
// the entity key have completed (at once, on this goroutine, if there are
// none; else on the reader goroutine). fn must not block.
func (p *Pool) AfterPending(key string, fn func()) {
	p.mu.Lock()
	prev := p.last[key]
	if key == "" || prev == nil {
		p.mu.Unlock()
		fn()
		return
	}
	prev.after = append(prev.after, &operation{run: fn, waiting: 1})
	p.mu.Unlock()
}

// send puts op on its slot's channel. It runs on the issuing goroutine or,
// for re-issues and released dependants, on the reader; it never blocks.
func (p *Pool) send(op *operation) {
	if op.run != nil {
		op.run()
		return
	}
	if op.pub != nil {
		var err error
		if ctx := op.pub.ctx; ctx != nil {
			err = ctx.Err() // an operation whose ctx has ended is not sent
			op.pub.ctx = nil
		}
		if err == nil {
			err = p.sendPub(op.pub)
		}
		if err != nil {
			op.pub.finish(err)
		}
		return
	}
	for {
		ch, g, err := p.channel(op.slot)
		if err == nil && p.waitsBehind(op, ch) {
			return // sent once they have been
		}
		if err == nil {
			// Counted so that publishes discarded with it are re-sent after
			// it is re-issued (see pubTracker.requests).
			ch.pubs.requestStarted()
			r := &mux.Request{Method: op.m}
			r.Done = func(reply proto.Method, msg *ops.Message, err error) {
				p.replied(op, r.Blame, reply, msg, ch, err)
				ch.pubs.requestDone()
			}
			err = ch.mc.Call(r)
			if err != nil {
				ch.pubs.requestDone()
			}
		}
		if err == nil {
			p.sentOn(op, ch)
			return
		}
		// The channel may have ended between lookup and call; take a fresh one.
		if ch != nil && RetryFresh(ch.mc, ch.gen, op.reissued) {
			op.reissued++
			continue
		}
		p.sendLater(op, g, err)
		return
	}
}

// sendLater parks op for the next connection if err says the connection
// (g) was lost and the client reconnects; else op fails with err.
func (p *Pool) sendLater(op *operation, g *session.Generation, err error) {
	if !p.connLost(err) {
		p.finish(op, nil, nil, err)
		return
	}
	p.retryLater(g, err, func() { p.send(op) }, func(err error) { p.finish(op, nil, nil, err) })
}

func (p *Pool) replied(op *operation, blame mux.Blame, reply proto.Method, msg *ops.Message, ch *pooledChannel, err error) {
	lost := err != nil && p.connLost(err)
	switch {
	case p.Discarded(err, op.reissued):
		op.reissued++
		p.send(op)
		return
	case lost && (blame == mux.Culprit || blame == mux.Suspect && op.suspected):
		// The broker closed the connection over it: it fails with that
		// error, unrecorded, and is not sent again (see suspects.go).
	case lost && blame == mux.Suspect:
		op.suspected = true
		p.suspect(op, ch.gen, err)
		return
	case lost:
		// Lost with its connection: declares, binds and deletes are
		// idempotent, so it goes out again on the next one (an isolated
		// suspect keeps its turn).
		p.sendLater(op, ch.gen, err)
		return
	case err == nil:
		p.rec.Observe(op.m, reply)
	}
	p.finish(op, reply, msg, err)
}

// waitsBehind reports whether op, about to go out on ch, must first wait
// for operations it relied on channel order to follow: they went out on a
// channel that has ended since and are not finished. A discarded one is
// about to be re-issued from the reader, or re-sent as an isolation
// suspect, and op would overtake it on the fresh channel (a publish would
// reach an exchange before its declare). op then waits until they have
// been sent again (or have finished), and is sent from there.
func (p *Pool) waitsBehind(op *operation, ch *pooledChannel) bool {
	// Read without pool.mu: behind and behindCh are written under it
	// before op is sent, by the goroutine that then sends it or hands it
	// over (enlistLocked, releaseLocked), and only op's sender reads them.
	if (op.behind[0] == nil || op.behindCh[0] == ch) && (op.behind[1] == nil || op.behindCh[1] == ch) {
		return false // still the channel they went out on: channel order holds
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, prev := range op.behind {
		if prev != nil && !prev.finished && prev.ch != ch {
			prev.afterSent = append(prev.afterSent, op)
			op.waiting++
		}
	}
	if op.waiting == 0 {
		return false
	}
	op.direct = false // no longer being sent by its issuer: later ones wait for it
	return true
}

// sentOn records that op went out on ch and sends the operations that
// waited only for that, now behind it in channel order.
func (p *Pool) sentOn(op *operation, ch *pooledChannel) {
	p.mu.Lock()
	op.sent, op.ch = true, ch
	ready := releaseLocked(op, op.afterSent)
	op.afterSent = nil
	p.mu.Unlock()
	for _, next := range ready {
		p.send(next)
	}
}

// releaseLocked counts op off the waits of those, and returns the ones
// now ready. Each remembers op as one it follows by channel order.
func releaseLocked(op *operation, those []*operation) []*operation {
	var ready []*operation
	for _, next := range those {
		for i, k := range next.keys {
			if k != "" && (k == op.keys[0] || k == op.keys[1]) && !op.finished {
				next.behind[i], next.behindCh[i] = op, op.ch
			}
		}
		if next.waiting--; next.waiting == 0 {
			ready = append(ready, next)
		}
	}
	return ready
}

// finish settles op and releases the operations that waited for it.
func (p *Pool) finish(op *operation, reply proto.Method, msg *ops.Message, err error) {
	if op.pub != nil {
		op.pub.finish(err)
		return
	}
	ready := p.complete(op)
	op.done(reply, msg, err)
	p.proceed(op, ready)
}

// complete marks op finished and returns the operations it releases, to
// be sent (proceed) once op's completion has run.
func (p *Pool) complete(op *operation) []*operation {
	p.mu.Lock()
	defer p.mu.Unlock()
	op.finished = true
	op.behind, op.behindCh = [2]*operation{}, [2]*pooledChannel{} // keeps no chain of settled operations alive
	for _, k := range op.keys {
		if k != "" && p.last[k] == op {
			delete(p.last, k)
		}
	}
	ready := releaseLocked(op, op.after)
	ready = append(ready, releaseLocked(op, op.afterSent)...)
	op.after, op.afterSent = nil, nil
	return ready
}

// proceed sends what finished op released and, if op was an isolated
// suspect, the next suspect.
func (p *Pool) proceed(op *operation, ready []*operation) {
	for _, next := range ready {
		p.send(next)
	}
	if op.isolated {
		p.nextSuspect() // its turn is over
	}
}

// channel returns the live channel for slot, opening a new one (pipelined,
// without waiting for open-ok) if there is none or it has ended. It also
// returns the connection it looked at: nil, with session.ErrOffline, while the
// client reconnects.
func (p *Pool) channel(slot int) (*pooledChannel, *session.Generation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.current()
	if g == nil {
		return nil, nil, session.ErrOffline
	}
	if ch := p.chans[slot]; ch != nil && ch.gen == g && ch.mc.Err() == nil {
		return ch, g, nil
	}
	ch, err := p.openConfirmed(g, &pubTracker{pool: p, next: 1})
	if err != nil {
		return nil, g, err
	}
	p.chans[slot] = ch
	return ch, g, nil
}

// retryLater runs run on the next connection if the client reconnects:
// at once if a newer one than seen is ready already, else once it is. If
// the client does not reconnect or has ended, fail gets err, or the
// client's end (session.Gate.RetryLater).
func (p *Pool) retryLater(seen *session.Generation, err error, run func(), fail func(error)) {
	p.gate.RetryLater(seen, err, run, fail)
}

// current is the connection operations go to; nil while the client
// reconnects (and recovers). It takes no lock.
func (p *Pool) current() *session.Generation {
	g, _ := p.gate.Current()
	return g
}
