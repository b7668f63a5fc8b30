package leveret

import (
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
// another channel (a bind after its exchange's declare) is sent once that
// operation has completed. When the broker closes a pooled channel, the
// operations it discarded are re-issued on a fresh one.
type pool struct {
	c    *Client
	seed maphash.Seed

	mu    sync.Mutex
	chans []*mux.Channel        // replaced when they end
	last  map[string]*pooledOp // latest unfinished operation per entity key
	rr    int                   // round robin for operations naming no entity
}

type pooledOp struct {
	m        proto.Method
	keys     [2]string
	slot     int
	done     func(proto.Method, error)
	reissued int

	// Guarded by pool.mu.
	sent     bool // on its channel: later operations there queue behind it
	finished bool
	waiting  int         // operations this one waits for
	after    []*pooledOp // operations waiting for this one
}

func newPool(c *Client, n int) *pool {
	return &pool{c: c, seed: maphash.MakeSeed(), chans: make([]*mux.Channel, n), last: make(map[string]*pooledOp)}
}

func (p *pool) issue(keys [2]string, m proto.Method, done func(proto.Method, error)) {
	op := &pooledOp{m: m, keys: keys, done: done}
	p.mu.Lock()
	op.slot = p.slotLocked(keys[0])
	for _, k := range keys {
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
	ready := op.waiting == 0
	p.mu.Unlock()
	if ready {
		p.send(op)
	}
}

func (p *pool) slotLocked(key string) int {
	if key == "" {
		p.rr++
		return p.rr % len(p.chans)
	}
	return int(maphash.String(p.seed, key) % uint64(len(p.chans)))
}

// send puts op on its slot's channel. It runs on the issuing goroutine or,
// for re-issues and released dependants, on the reader; it never blocks.
func (p *pool) send(op *pooledOp) {
	for {
		mc, err := p.channel(op.slot)
		if err == nil {
			err = mc.Call(&mux.Request{Method: op.m, Done: func(reply proto.Method, _ *ops.Message, err error) {
				p.replied(op, reply, err)
			}})
		}
		if err == nil {
			// Only now may later operations on the same entity skip waiting
			// for this one: they will queue behind it on the channel.
			p.mu.Lock()
			op.sent = true
			p.mu.Unlock()
			return
		}
		// The channel may have ended between lookup and call; take a fresh one.
		if mc != nil && mc.Err() != nil && p.c.conn.Err() == nil && op.reissued < maxReissues {
			op.reissued++
			continue
		}
		p.finish(op, nil, err)
		return
	}
}

func (p *pool) replied(op *pooledOp, reply proto.Method, err error) {
	if err != nil && errors.Is(err, ErrNotExecuted) && !isConnectionError(err) && op.reissued < maxReissues {
		op.reissued++
		p.send(op)
		return
	}
	p.finish(op, reply, err)
}

// finish settles op and releases the operations that waited for it.
func (p *pool) finish(op *pooledOp, reply proto.Method, err error) {
	p.mu.Lock()
	op.finished = true
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
	op.done(reply, err)
	for _, next := range ready {
		p.send(next)
	}
}

// channel returns the live channel for slot, opening a new one (pipelined,
// without waiting for open-ok) if there is none or it has ended.
func (p *pool) channel(slot int) (*mux.Channel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if mc := p.chans[slot]; mc != nil && mc.Err() == nil {
		return mc, nil
	}
	mc, err := p.c.conn.OpenChannel(nil, nil)
	if err != nil {
		return nil, err
	}
	p.chans[slot] = mc
	return mc, nil
}
