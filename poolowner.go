package leveret

import (
	"context"
	"errors"

	"github.com/leveret-mq/leveret/internal/pool"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// The client-level operations run on internal/pool; this file is the
// root's side of it: the pool's Owner, the adapter that lets topology.go
// issue through it, and the Client.Publish value that settles a promise.

func (c *Client) newPool(g *generation) *pool.Pool {
	return pool.New(pool.Config{
		Owner:            (*poolOwner)(c),
		Errors:           pool.Errors{Nacked: ErrNacked, NotConfirmed: ErrNotConfirmed},
		Gate:             c.reg.gate,
		Record:           c.rec,
		Channels:         c.cfg.topologyChannels,
		UnconfirmedLimit: c.cfg.unconfirmedLimit,
	})
}

// poolOwner is the Client as the pool's Owner.
type poolOwner Client

// Classify tells the pool what one of the client's errors means.
func (o *poolOwner) Classify(err error) pool.Fault {
	var f pool.Fault
	f.Connection = isConnectionError(err)
	f.Discarded = errors.Is(err, ErrNotExecuted) && !f.Connection
	var ce *ChannelError
	if errors.As(err, &ce) {
		f.Channel, f.ClassID, f.MethodID, f.Text = true, ce.ClassID, ce.MethodID, ce.Text
	}
	return f
}

// RefusedReturn reports a returned message the pool's channel dropped for
// its size.
func (o *poolOwner) RefusedReturn(r *proto.BasicReturn, size uint64) {
	(*Client)(o).refusedReturn(r, size)
}

// pooled issues topology operations through the pool (see issuer).
type pooled struct{ p *pool.Pool }

func (is pooled) issue(keys [2]string, m proto.Method, done replyFunc) {
	is.p.Issue(keys, m, func(reply proto.Method, msg *ops.Message, err error) { done(reply, msg, nil, err) })
}

// clientPublish is one Client.Publish: the pool's publish, its promise and,
// with publish hooks, what they were shown and the context OnPublish
// returned, for OnPublishDone.
type clientPublish struct {
	pub   pool.Publish
	c     *Client
	prom  *Promise[struct{}]
	hinfo *PublishInfo
	hctx  context.Context
}

// Settled implements pool.Settler: it settles the promise, then runs the
// OnPublishDone hooks on the dispatcher (it may be on the reader), and
// gives the body's buffer back once nothing reads it.
func (cp *clientPublish) Settled(err error, returned *ops.Return, body *[]byte) {
	if returned != nil {
		err = &ReturnedError{Return: *returned}
	}
	cp.prom.resolve(struct{}{}, err)
	if cp.hinfo != nil {
		h, ctx, info := cp.c.hooks, cp.hctx, cp.hinfo
		cp.c.dispatch.post(func() {
			h.donePublish(ctx, info, err)
			pool.ReleaseBody(body)
		})
		return
	}
	pool.ReleaseBody(body)
}

// publish issues a client-level publish; an error means nothing was sent
// and the promise is not settled.
func (c *Client) publish(ctx context.Context, o *ops.Publish, prom *Promise[struct{}]) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cp := &clientPublish{c: c, prom: prom}
	cp.pub.Init(o, cp)
	if h := c.hooks; h.publishes() {
		cp.hinfo = &PublishInfo{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory, Message: cp.pub.Message(), Confirmed: true}
		ctx = h.runPublish(ctx, cp.hinfo) // the copy has its own headers table already
		cp.hctx = ctx
	}
	if err := c.pool.Publish(ctx, &cp.pub); err != nil {
		if cp.hinfo != nil {
			c.hooks.donePublish(ctx, cp.hinfo, err)
		}
		return err
	}
	return nil
}
