package leveret

import (
	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/pool"
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

// getChan is one queue's Get channel. pending is guarded by registry.mu.
type getChan struct {
	ch      *Channel
	pending int // gets sent and not yet answered
}

// get sends basic.get on the queue's Get channel. It never blocks; it runs
// on the issuing goroutine or, behind pending operations on the queue, on
// the reader.
func (r *registry) get(o ops.Get, prom *Promise[GetResult], reissued int) {
	reply := getReply(prom, o.NoAck)
	later := func(seen *generation, err error) {
		r.retryLater(seen, err, func() { r.get(o, prom, reissued) }, func(err error) { reply(nil, nil, nil, err) })
	}
	for {
		g, gen, err := r.getChannel(o.Queue)
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
				if r.c.pool.Discarded(err, reissued) {
					r.getDone(g)
					r.get(o, prom, reissued+1) // discarded behind another Get that failed
					return
				}
				if err != nil && !o.NoAck && connLost(err) {
					// Lost with its connection: a message it took was
					// requeued, so it may run again on the next one. A
					// NoAck Get may have taken its message: it fails.
					r.getDone(g)
					later(gen, err)
					return
				}
				// The delivery is outstanding before the Get stops counting
				// as pending, so the channel never looks idle in between.
				reply(m, msg, g.ch, err)
				r.getDone(g)
			}})
		if err == nil {
			return
		}
		r.getDone(g)
		if !pool.RetryFresh(g.ch.mux(), g.ch.generation(), reissued) {
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

func (r *registry) getDone(g *getChan) {
	r.mu.Lock()
	g.pending--
	r.mu.Unlock()
}

// getChannel returns queue's live Get channel with one more Get pending,
// opening it (pipelined) if needed, and the connection it looked at (nil,
// with errOffline, while the client reconnects).
func (r *registry) getChannel(queue string) (*getChan, *generation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	gen := r.current()
	if gen == nil {
		return nil, nil, errOffline
	}
	if g := r.gets[queue]; g != nil && g.ch.generation() == gen && g.ch.mux().Err() == nil {
		g.pending++
		return g, gen, nil
	}
	if len(r.gets) >= maxGetChannels {
		r.closeIdleGetsLocked()
	}
	ch, err := r.c.openChannel(gen, nil)
	if err != nil {
		return nil, gen, err
	}
	g := &getChan{ch: ch, pending: 1}
	r.gets[queue] = g
	return g, gen, nil
}

// closeIdleGetsLocked closes the Get channels that nothing uses: no Get
// pending and no delivery awaiting an acknowledgement.
func (r *registry) closeIdleGetsLocked() {
	for q, g := range r.gets {
		if g.ch.mux().Err() != nil {
			delete(r.gets, q)
			continue
		}
		g.ch.mu.Lock()
		idle := g.pending == 0 && g.ch.unacked.empty()
		g.ch.mu.Unlock()
		if idle {
			g.ch.mux().Close(func(error) {})
			delete(r.gets, q)
		}
	}
}
