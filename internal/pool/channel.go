package pool

import (
	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/ops"
)

// pooledChannel is one of the pool's own AMQP channels (pool.chans, the
// isolation channel). It is in confirm mode and carries client-level
// topology operations and Client.Publish, never deliveries; no user sees
// it. Like its connection it is single-use: the pool opens a fresh one when
// it has ended. It is its own mux.Handler: confirmations and returns go to
// its publish tracker, and its end hands the publishes it held back to the
// pool (publishesEnded). Client.Consume's and Client.Get's channels are
// *Channel values instead: their deliveries name them.
type pooledChannel struct {
	p    *Pool
	gen  *session.Generation
	mc   *mux.Channel
	pubs *pubTracker
}

// openConfirmed opens a pooled channel on g in confirm mode, with t
// following its publishes. confirm.select is pipelined behind channel.open,
// before any publish, so the broker counts every publish on it from 1. The
// handler is in place before mux can reach the channel.
func (p *Pool) openConfirmed(g *session.Generation, t *pubTracker) (*pooledChannel, error) {
	pc := &pooledChannel{p: p, gen: g, pubs: t}
	pc.mc = g.Conn.NewChannel(pc)
	if err := pc.mc.Open(nil); err != nil {
		return nil, err
	}
	// Its failure ends the channel, and publishesEnded handles the rest.
	pc.mc.Call(&mux.Request{Method: &proto.ConfirmSelect{}, Done: func(proto.Method, *ops.Message, error) {}})
	return pc, nil
}

// Async implements mux.Handler, on the reader: a returned Client.Publish
// and the confirmations settle their own promises.
func (pc *pooledChannel) Async(m proto.Method, msg *ops.Message) {
	switch m := m.(type) {
	case *proto.BasicReturn:
		pc.pubs.returned(ops.Return{ReplyCode: ops.ReplyCode(m.ReplyCode), ReplyText: m.ReplyText, Exchange: m.Exchange, RoutingKey: m.RoutingKey, Message: *msg})
	case *proto.BasicAck:
		pc.pubs.confirmed(m.DeliveryTag, m.Multiple, true)
	case *proto.BasicNack:
		pc.pubs.confirmed(m.DeliveryTag, m.Multiple, false)
	}
}

// Closed implements mux.Handler, on the reader: the publishes the channel
// held are re-sent, isolated or failed.
func (pc *pooledChannel) Closed(err error) { pc.p.publishesEnded(pc, err) }

// Oversized implements mux.Handler: a returned message over the size limit
// was dropped; its publish is settled by its confirmation.
func (pc *pooledChannel) Oversized(m proto.Method, size uint64) {
	if r, ok := m.(*proto.BasicReturn); ok {
		pc.p.owner.RefusedReturn(r, size)
	}
}
