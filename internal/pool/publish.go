package pool

import (
	"context"
	"errors"
	"maps"
	"strings"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/ops"
)

// Publish is the pool's confirmed publish (Client.Publish): the pool's
// channels run in confirm mode, a publish settles on the broker's
// confirmation, and a publish the broker discarded because its channel
// closed under it (a failing operation in front of it) is re-sent on a
// fresh one. Each publish keeps a private copy of its message until it is
// confirmed.

// tagHeader carries a mandatory client-level publish's delivery tag, so a
// basic.return is linked to its publish exactly (wire order does not link
// them; see confirm.SeqHeader, the same header). It is removed from the
// returned message.
const tagHeader = "x-leveret-publish-seq"

// pubCostOverhead is what one unconfirmed publish costs besides its body,
// counted against WithUnconfirmedLimit.
const pubCostOverhead = 256

// Publish is one Client.Publish until it is settled. It is its own
// pooled operation, so that operations on other channels that name its
// entity wait for its confirmation. The client embeds it in a value of its
// own, which Init names as its Settler.
type Publish struct {
	op       operation
	pool     *Pool
	m        proto.BasicPublish
	msg      ops.Message // private copy: re-sent if the broker discards it
	buf      *[]byte     // msg.Body's pooled buffer, if it has one (see bodybuf.go)
	hold     *bodyHold   // with buf: writes of the body in flight, a confirmation waiting for them
	cost     int
	owner    Settler
	ret      *ops.Return // basic.return received; the ack that follows settles it
	sent     uint64      // place in its channel's send order (see mux.Channel.FailedAt)
	reissued int
	// ctx is the publish's context while it waits for an operation on
	// another channel: if it ends first, the publish is not sent.
	ctx context.Context
}

// Settler is told once a publish has settled: err is nil when the broker
// confirmed it, the Errors' Nacked when it nacked it, and otherwise why it
// failed; returned, if not nil, is the basic.return of a confirmed
// mandatory publish (the error to report instead of nil). body, if not
// nil, is the body's pooled buffer: the owner gives it back (ReleaseBody)
// once nothing reads the body any more. It runs on the reader goroutine or
// the issuing one, with no pool lock held, and must not block.
type Settler interface {
	Settled(err error, returned *ops.Return, body *[]byte)
}

// Init makes pub the publish of o, settled through owner. It copies the
// message: the caller may reuse o's body at once.
func (pub *Publish) Init(o *ops.Publish, owner Settler) {
	*pub = Publish{
		m:     proto.BasicPublish{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory},
		msg:   o.Message,
		owner: owner,
	}
	pub.msg.Body, pub.buf = copyBody(o.Message.Body)
	if pub.buf != nil {
		pub.hold = new(bodyHold)
	}
	pub.cost = cap(pub.msg.Body) + pubCostOverhead // the memory held, not the body's length
	if o.Mandatory || o.Message.Headers != nil {
		pub.msg.Headers = maps.Clone(o.Message.Headers)
	}
	pub.op.pub = pub
}

// Message is the publish's private copy of its message, sent as it is
// when Publish is called: a hook may change its headers before that.
func (pub *Publish) Message() *ops.Message { return &pub.msg }

// confirmed settles the publish from the broker's basic.ack or basic.nack.
// A pooled body may still be being written (a peer that confirms what it
// has not read): then the last write settles it (bodyWritten).
func (pub *Publish) confirmed(ack bool) {
	if pub.buf != nil && pub.hold.confirmWaits(ack) {
		return
	}
	pub.settleConfirmed(ack)
}

// settleConfirmed settles the publish from a confirmation once nothing
// writes its body any more: the broker has read all of it, so its body's
// buffer can be reused.
func (pub *Publish) settleConfirmed(ack bool) {
	var err error
	var ret *ops.Return
	switch {
	case !ack:
		err = pub.pool.errs.Nacked
	case pub.ret != nil:
		ret = pub.ret
	}
	buf := pub.buf
	pub.buf = nil
	pub.settle(err, ret, buf)
}

// finish settles the publish, gives back its budget and releases the
// operations that waited for it. Its body is left to the collector: a
// write may still be queued that reads it.
func (pub *Publish) finish(err error) { pub.settle(err, nil, nil) }

// wasReturned settles a publish that the broker returned and will not
// confirm (its channel ended): it was processed, and unroutable.
func (pub *Publish) wasReturned() { pub.settle(nil, pub.ret, nil) }

// settle is finish, and hands the owner buf to give back once nothing
// reads the body (see Settler).
func (pub *Publish) settle(err error, ret *ops.Return, buf *[]byte) {
	p := pub.pool
	p.budget.release(pub.cost)
	ready := p.complete(&pub.op)
	pub.owner.Settled(err, ret, buf)
	p.proceed(&pub.op, ready)
}

// takeTag removes tagHeader from a returned message and returns its value.
func takeTag(m *ops.Message) (uint64, bool) {
	v, ok := m.Headers[tagHeader].(int64)
	if !ok || v <= 0 {
		return 0, false
	}
	delete(m.Headers, tagHeader)
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
	return uint64(v), true
}

// Publish sends pub, made by Init, in confirm mode; its owner is told
// when it settles. It waits, under ctx, for room under the unconfirmed
// limit, in the connection's output buffer and while the client
// reconnects. An error means nothing was sent, the budget is not held and
// the owner is not told; otherwise the owner is told, once.
func (p *Pool) Publish(ctx context.Context, pub *Publish) error {
	if err := p.budget.acquire(ctx, pub.cost); err != nil {
		return err
	}
	key := Key('e', pub.m.Exchange)
	if pub.m.Exchange == "" {
		key = Key('q', pub.m.RoutingKey)
	}
	// Every client-level publish goes to one pooled channel, behind the
	// publishes issued before it, whatever its exchange: publishes issued
	// one after another arrive in that order (code ported from amqp091-go
	// relies on channel order), also across a failing publish and a
	// reconnect, which re-send in tag order. Its entity still orders it
	// after a declare or bind on another channel.
	pub.op.keys = [2]string{publishStream, key}
	pub.pool = p
	p.mu.Lock()
	ready := p.enlistLocked(&pub.op)
	if !ready {
		pub.ctx = ctx // checked when it is released
	}
	p.mu.Unlock()
	if !ready {
		return nil // sent by the operation it waits for, on the reader
	}
	for {
		// While the client reconnects, a new publish waits here for the
		// next connection, under its ctx, like for room.
		g, err := p.gate.WaitLive(ctx)
		if err == nil {
			if err = g.Conn.WaitPublishRoom(ctx); err != nil && ctx.Err() == nil && p.gate.Reconnects() && p.connLost(err) {
				continue // lost meanwhile: wait for the next one
			}
		}
		if err == nil {
			err = p.sendPub(pub)
		}
		if err != nil {
			pub.finish(err) // nothing was sent; unblock whoever queued behind it
		}
		return nil
	}
}

// sendPub puts pub on its slot's channel, taking a fresh one if that
// channel ended under it, or parks it until the next connection. It never
// waits.
func (p *Pool) sendPub(pub *Publish) error {
	err := p.sendVia(pub, func() (*pooledChannel, *session.Generation, error) {
		ch, g, err := p.channel(pub.op.slot)
		if err == nil && p.waitsBehind(&pub.op, ch) {
			return nil, g, errWaiting
		}
		return ch, g, err
	})
	if err == errParked || err == errWaiting {
		return nil
	}
	return err
}

// publishStream is the ordering key all client-level publishes share (it
// names no entity): it puts them on one pooled channel, in issue order.
const publishStream = "p:"

// errWaiting is sendPub's report that a publish waits for operations it
// must not overtake (see pool.waitsBehind); it is sent from there.
var errWaiting = errors.New("amqp: waiting for earlier operations on its entity")

// errParked is sendVia's report that a publish waits for the next connection.
var errParked = errors.New("amqp: parked until the next connection")

// sendVia puts pub on the channel open returns (the live one, or a fresh
// one if it ended), trying again while channels end under it. When the
// connection is lost, pub waits for the next one (see retryLater) and
// sendVia returns errParked.
func (p *Pool) sendVia(pub *Publish, open func() (*pooledChannel, *session.Generation, error)) error {
	for {
		ch, g, err := open()
		if err == nil {
			err = ch.pubs.send(ch, pub)
			if err == nil {
				p.sentOn(&pub.op, ch)
				return nil
			}
			if ch != nil && RetryFresh(ch.mc, ch.gen, pub.reissued) {
				pub.reissued++
				continue
			}
		}
		if p.connLost(err) {
			p.resendLater(pub, g, err)
			return errParked
		}
		return err // refused by the codec, or nothing left to try
	}
}

// resendLater sends pub on the next connection (at-least-once: it may have
// arrived on the lost one), or fails it as not confirmed if there is none.
func (p *Pool) resendLater(pub *Publish, seen *session.Generation, err error) {
	p.retryLater(seen, err, func() {
		if err := p.sendPub(pub); err != nil {
			pub.finish(p.notConfirmed(err))
		}
	}, func(err error) { pub.finish(p.notConfirmed(err)) })
}

// publishesEnded handles the unconfirmed publishes of a pooled channel
// that ended with err (on the reader). The broker discarded what it had not
// processed, so each is re-sent, except: on a connection failure they fail
// (in doubt); a returned one was processed and settles as returned; and
// when a publish closed the channel, that publish fails with err. When a
// topology operation closed it, mux says where it was in the send order
// (FailedAt): a transient publish sent before it was routed and settles as
// done, as below. Re-sends
// go out after the topology operations discarded with them are re-issued
// (see pubTracker.requests): a publish issued behind a declare of its
// exchange is re-sent behind it too.
//
// Which publish failed: RabbitMQ names the exchange in the errors a
// publish can cause through it (404 no exchange, 403 access refused or
// internal exchange), so the oldest unconfirmed publish to that exchange
// is the culprit. Those behind it to the same exchange fail with it when
// no topology operation was discarded with them (nothing issued in between
// can have made the exchange, so they would only fail again, a channel
// each); otherwise they are re-sent behind those operations. The broker
// processes a channel's frames in order, so a publish ahead of the culprit
// was routed before the failure: a transient one settles as done (routing
// is all its confirmation would have said), a persistent one is re-sent,
// since only the confirmation says it was written to disk. When the text
// names no exchange of theirs (406 for an invalid property, say), the
// suspects are re-sent one at a time on a channel of their own, where each
// failure names its publish.
func (p *Pool) publishesEnded(ch *pooledChannel, err error) {
	t := ch.pubs
	pubs, requests := t.end()
	if len(pubs) == 0 {
		if t.isolated {
			p.isolateNext()
		}
		return
	}
	fault := p.owner.Classify(err)
	if fault.Connection {
		// In doubt: re-sent on the next connection if the client
		// reconnects, else failed as not confirmed.
		for _, pub := range pubs {
			if pub.ret != nil {
				pub.wasReturned()
				continue
			}
			p.resendLater(pub, ch.gen, err)
		}
		if t.isolated {
			p.isolateNext() // the suspects still queued fail too: nothing can send them
		}
		return
	}
	blamed := fault.Channel && fault.ClassID == 60 && fault.MethodID == 40 // basic.publish
	culprit := -1                                                          // index in pubs
	exchange, named := "", false
	switch {
	case !blamed:
	case t.isolated:
		// One suspect at a time is in flight here: it is the culprit.
		culprit = firstUnreturned(pubs, func(*Publish) bool { return true })
	default:
		if exchange, named = namedExchange(fault.Text); named {
			culprit = firstUnreturned(pubs, func(pub *Publish) bool { return pub.m.Exchange == exchange })
		}
	}
	failedAt := ch.mc.FailedAt() // a topology operation's place, when one failed
	var suspects, again []*Publish
	for i, pub := range pubs {
		switch {
		case pub.ret != nil:
			pub.wasReturned()
		case pub.msg.DeliveryMode != ops.Persistent && (i < culprit || (!blamed && pub.sent != 0 && pub.sent < failedAt)):
			pub.finish(nil) // routed before the publish or operation that failed
		case blamed && culprit < 0:
			suspects = append(suspects, pub)
		case i == culprit, culprit >= 0 && i > culprit && named && !requests && pub.m.Exchange == exchange:
			pub.finish(err)
		default:
			again = append(again, pub)
		}
	}
	if len(again) > 0 {
		t.resendAfterRequests(again, err)
	}
	if len(suspects) > 0 {
		p.isolate(suspects)
	}
	if t.isolated {
		p.isolateNext()
	}
}

// firstUnreturned is the index of the first publish in pubs that was not
// returned and matches, or -1.
func firstUnreturned(pubs []*Publish, match func(*Publish) bool) int {
	for i, pub := range pubs {
		if pub.ret == nil && match(pub) {
			return i
		}
	}
	return -1
}

// resend sends pub again after its channel ended with cause.
func (p *Pool) resend(pub *Publish, cause error) {
	if pub.reissued >= maxReissues {
		pub.finish(p.notConfirmed(cause))
		return
	}
	pub.reissued++
	if err := p.sendPub(pub); err != nil {
		pub.finish(p.notConfirmed(err))
	}
}

// namedExchange finds the exchange in a RabbitMQ error text such as
// "NOT_FOUND - no exchange 'x' in vhost '/'".
func namedExchange(text string) (string, bool) {
	const open, closing = "exchange '", "' in vhost '"
	i := strings.Index(text, open)
	j := strings.LastIndex(text, closing)
	if i < 0 || j < i+len(open) {
		return "", false
	}
	return text[i+len(open) : j], true
}
