package leveret

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// maxReissues bounds how often one pooled operation is re-sent after
// operations in front of it failed; each re-send follows a distinct failure.
const maxReissues = 8

// pool spreads client-level operations over a few of the client's own
// channels. An operation goes to the channel its first entity hashes to, so
// operations on one queue or exchange stay in order on one channel. An
// operation that also names an entity with an operation still pending on
// another channel (a bind after its exchange's declare, a publish after
// the bind) is sent once that operation has completed. When the broker
// closes a pooled channel, the operations it discarded are re-issued on a
// fresh one, so only the failing operation fails.
type pool struct {
	c    *Client
	seed maphash.Seed

	mu    sync.Mutex
	chans []*Channel           // replaced when they end
	last  map[string]*pooledOp // latest unfinished operation per entity key
	rr    int                  // round robin for operations naming no entity
}

type pooledOp struct {
	m        proto.Method
	msg      *ops.Message // content of a chained publish (a private copy)
	keys     [2]string
	slot     int
	done     replyFunc
	reissued int
	run      func() // instead of sending: a callback waiting for an entity (afterPending)

	// Guarded by pool.mu.
	sent    bool        // on its channel: later operations there queue behind it
	waiting int         // operations this one waits for
	after   []*pooledOp // operations waiting for this one
}

func newPool(c *Client, n int) *pool {
	return &pool{c: c, seed: maphash.MakeSeed(), chans: make([]*Channel, n), last: make(map[string]*pooledOp)}
}

func (p *pool) issue(keys [2]string, m proto.Method, done replyFunc) {
	op := &pooledOp{m: m, keys: keys, done: done}
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
func (p *pool) enlistLocked(op *pooledOp) bool {
	switch op.m.(type) {
	case *proto.QueueDelete, *proto.ExchangeDelete:
		op.slot = deleteSlot
	default:
		op.slot = p.slotLocked(op.keys[0])
	}
	for _, k := range op.keys {
		if k == "" {
			continue
		}
		// Wait for an unfinished operation on the same entity unless it is
		// already on this channel, where channel order suffices.
		if prev := p.last[k]; prev != nil && (prev.slot != op.slot || !prev.sent) {
			prev.after = append(prev.after, op)
			op.waiting++
		}
		p.last[k] = op
	}
	return op.waiting == 0
}

func (p *pool) slotLocked(key string) int {
	if key == "" {
		p.rr++
		return p.rr % len(p.chans)
	}
	return int(maphash.String(p.seed, key) % uint64(len(p.chans)))
}

// afterPending runs fn once the client-level operations issued so far on
// the entity key have completed (at once, on this goroutine, if there are
// none; else on the reader goroutine). fn must not block.
func (p *pool) afterPending(key string, fn func()) {
	p.mu.Lock()
	prev := p.last[key]
	if key == "" || prev == nil {
		p.mu.Unlock()
		fn()
		return
	}
	prev.after = append(prev.after, &pooledOp{run: fn, waiting: 1})
	p.mu.Unlock()
}

// publish sends a client-level publish. Usually it goes straight out on
// the channel of its exchange (or, for the default exchange, of its
// queue), waiting for room under ctx. If an operation on that entity is
// still pending elsewhere, the message is copied and sent once it is done.
func (p *pool) publish(ctx context.Context, o *ops.Publish, m *proto.BasicPublish, written func(error)) error {
	key := entityKey('e', o.Exchange)
	if o.Exchange == "" {
		key = entityKey('q', o.RoutingKey)
	}
	p.mu.Lock()
	slot := p.slotLocked(key)
	if prev := p.last[key]; key != "" && prev != nil && (prev.slot != slot || !prev.sent) {
		cp := o.Message
		cp.Body = append([]byte(nil), o.Message.Body...)
		op := &pooledOp{m: m, msg: &cp, keys: [2]string{key}, done: func(_ proto.Method, _ *ops.Message, _ *Channel, err error) { written(err) }}
		p.enlistLocked(op)
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	for {
		ch, err := p.channel(slot)
		if err != nil {
			return err
		}
		err = ch.mc.Publish(ctx, m, &o.Message, written)
		if err == nil || ch.mc.Err() == nil || p.c.conn.Err() != nil {
			return err
		}
		// The channel ended under us (an earlier publish failed); use a fresh one.
	}
}

// send puts op on its slot's channel. It runs on the issuing goroutine or,
// for re-issues and released dependants, on the reader; it never blocks.
func (p *pool) send(op *pooledOp) {
	if op.run != nil {
		op.run()
		return
	}
	for {
		ch, err := p.channel(op.slot)
		if err == nil {
			if op.msg != nil {
				err = ch.mc.Publish(nil, op.m.(*proto.BasicPublish), op.msg, func(err error) { p.finish(op, nil, nil, nil, err) })
			} else {
				err = ch.mc.Call(&mux.Request{Method: op.m, Done: func(reply proto.Method, msg *ops.Message, err error) {
					p.replied(op, reply, msg, ch, err)
				}})
			}
		}
		if err == nil {
			p.mu.Lock()
			op.sent = true
			p.mu.Unlock()
			return
		}
		// The channel may have ended between lookup and call; take a fresh one.
		if ch != nil && ch.mc.Err() != nil && p.c.conn.Err() == nil && op.reissued < maxReissues {
			op.reissued++
			continue
		}
		p.finish(op, nil, nil, nil, err)
		return
	}
}

func (p *pool) replied(op *pooledOp, reply proto.Method, msg *ops.Message, ch *Channel, err error) {
	if err != nil && errors.Is(err, ErrNotExecuted) && !isConnectionError(err) && op.reissued < maxReissues {
		op.reissued++
		p.send(op)
		return
	}
	p.finish(op, reply, msg, ch, err)
}

// finish settles op and releases the operations that waited for it.
func (p *pool) finish(op *pooledOp, reply proto.Method, msg *ops.Message, ch *Channel, err error) {
	p.mu.Lock()
	for _, k := range op.keys {
		if k != "" && p.last[k] == op {
			delete(p.last, k)
		}
	}
	var ready []*pooledOp
	for _, next := range op.after {
		if next.waiting--; next.waiting == 0 {
			ready = append(ready, next)
		}
	}
	op.after = nil
	p.mu.Unlock()
	op.done(reply, msg, ch, err)
	for _, next := range ready {
		p.send(next)
	}
}

// channel returns the live channel for slot, opening a new one (pipelined,
// without waiting for open-ok) if there is none or it has ended.
func (p *pool) channel(slot int) (*Channel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ch := p.chans[slot]; ch != nil && ch.mc.Err() == nil {
		return ch, nil
	}
	ch, err := p.c.openChannel(nil)
	if err != nil {
		return nil, err
	}
	p.chans[slot] = ch
	return ch, nil
}
