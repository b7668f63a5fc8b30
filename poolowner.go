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

func (c *Client) newPool() *pool.Pool {
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
// with publish hooks, what they need for OnPublishDone. It is one
// allocation per publish; keep it within its size class (576 bytes).
type clientPublish struct {
	pub   pool.Publish
	prom  *Promise[struct{}]
	hooks *publishHooks // nil without publish hooks
}

// publishHooks is what a hooked Client.Publish keeps for OnPublishDone:
// what the hooks were shown, and the context OnPublish returned.
type publishHooks struct {
	c    *Client
	ctx  context.Context
	info PublishInfo
}

// Settled implements pool.Settler: it settles the promise, then runs the
// OnPublishDone hooks on the dispatcher (it may be on the reader), and
// gives the body's buffer back once nothing reads it.
func (cp *clientPublish) Settled(err error, returned *ops.Return, body *[]byte) {
	if returned != nil {
		err = &ReturnedError{Return: *returned}
	}
	cp.prom.resolve(struct{}{}, err)
	if ph := cp.hooks; ph != nil {
		ph.c.dispatch.post(func() {
			ph.c.hooks.donePublish(ph.ctx, &ph.info, err)
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
	cp := &clientPublish{prom: prom}
	cp.pub.Init(o, cp)
	if h := c.hooks; h.publishes() {
		ph := &publishHooks{c: c, info: PublishInfo{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory,
			Message: cp.pub.Message(), Confirmed: true}}
		ph.ctx = h.runPublish(ctx, &ph.info) // the copy has its own headers table already
		ctx, cp.hooks = ph.ctx, ph
	}
	if err := c.pool.Publish(ctx, &cp.pub); err != nil {
		if cp.hooks != nil {
			c.hooks.donePublish(ctx, &cp.hooks.info, err)
		}
		return err
	}
	return nil
}
