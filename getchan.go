package leveret

import (
	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Client.Get runs on a channel of its own per queue, not on the pool: the
// delivery it returns is acknowledged on the channel it came from, and a
// pooled channel can be closed by any unrelated failing operation, which
// would void the ack and requeue the message. Only a Get of the same queue
// can close a queue's Get channel (404 once the queue is gone, 403, 405),
// and then that queue's outstanding deliveries are void anyway.

// maxGetChannels is how many queues' Get channels are kept before idle
// ones (no Get pending, no delivery unacknowledged) are closed.
const maxGetChannels = 16

// getChan is one queue's Get channel. pending is guarded by pool.mu.
type getChan struct {
	ch      *Channel
	pending int // gets sent and not yet answered
}

// get sends basic.get on the queue's Get channel. It never blocks; it runs
// on the issuing goroutine or, behind pending operations on the queue, on
// the reader.
func (p *pool) get(o ops.Get, prom *Promise[GetResult], reissued int) {
	reply := getReply(prom, o.NoAck)
	later := func(seen *generation, err error) {
		p.retryLater(seen, err, func() { p.get(o, prom, reissued) }, func(err error) { reply(nil, nil, nil, err) })
	}
	for {
		g, gen, err := p.getChannel(o.Queue)
		if err != nil {
			if connLost(err) {
				later(gen, err)
				return
			}
			reply(nil, nil, nil, err)
			return
		}
		err = g.ch.mux().Call(&mux.Request{Method: &proto.BasicGet{Queue: o.Queue, NoAck: o.NoAck},
			Done: func(m proto.Method, msg *ops.Message, err error) {
				if discarded(err, reissued) {
					p.getDone(g)
					p.get(o, prom, reissued+1) // discarded behind another Get that failed
					return
				}
				if err != nil && !o.NoAck && connLost(err) {
					// Lost with its connection: a message it took was
					// requeued, so it may run again on the next one. A
					// NoAck Get may have taken its message: it fails.
					p.getDone(g)
					later(gen, err)
					return
				}
				// The delivery is outstanding before the Get stops counting
				// as pending, so the channel never looks idle in between.
				reply(m, msg, g.ch, err)
				p.getDone(g)
			}})
		if err == nil {
			return
		}
		p.getDone(g)
		if !retryFresh(g.ch.mux(), g.ch.generation(), reissued) {
			if connLost(err) {
				later(gen, err)
				return
			}
			reply(nil, nil, nil, err)
			return
		}
		reissued++ // the channel ended between lookup and call
	}
}

func (p *pool) getDone(g *getChan) {
	p.mu.Lock()
	g.pending--
	p.mu.Unlock()
}

// getChannel returns queue's live Get channel with one more Get pending,
// opening it (pipelined) if needed, and the connection it looked at (nil,
// with errOffline, while the client reconnects).
func (p *pool) getChannel(queue string) (*getChan, *generation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gen := p.current()
	if gen == nil {
		return nil, nil, errOffline
	}
	if g := p.gets[queue]; g != nil && g.ch.generation() == gen && g.ch.mux().Err() == nil {
		g.pending++
		return g, gen, nil
	}
	if len(p.gets) >= maxGetChannels {
		p.closeIdleGetsLocked()
	}
	ch, err := p.c.openChannel(gen, nil)
	if err != nil {
		return nil, gen, err
	}
	g := &getChan{ch: ch, pending: 1}
	p.gets[queue] = g
	return g, gen, nil
}

// closeIdleGetsLocked closes the Get channels that nothing uses: no Get
// pending and no delivery awaiting an acknowledgement.
func (p *pool) closeIdleGetsLocked() {
	for q, g := range p.gets {
		if g.ch.mux().Err() != nil {
			delete(p.gets, q)
			continue
		}
		g.ch.mu.Lock()
		idle := g.pending == 0 && g.ch.unacked.empty()
		g.ch.mu.Unlock()
		if idle {
			g.ch.mux().Close(func(error) {})
			delete(p.gets, q)
		}
	}
}
