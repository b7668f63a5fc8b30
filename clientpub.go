package leveret

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Client.Publish is the safe publish: the pool's channels run in confirm
// mode, a client-level publish settles on the broker's confirmation, and a
// publish the broker discarded because its channel closed under it (a
// failing operation in front of it) is re-sent on a fresh channel. Each
// publish keeps a private copy of its message until it is confirmed.

var (
	// ErrNacked is the error of a Client.Publish the broker refused with
	// basic.nack (for example a queue at its length limit with
	// overflow=reject-publish). The message was not taken.
	ErrNacked = errors.New("amqp: publish nacked by the broker")
	// ErrNotConfirmed marks a publish whose channel or connection ended
	// before the broker confirmed it: it may or may not have arrived. The
	// error also wraps the cause.
	ErrNotConfirmed = errors.New("amqp: publish not confirmed")
)

// ReturnedError is the error of a mandatory Client.Publish that the broker
// returned as unroutable (basic.return). errors.Is matches the return's
// reply code, usually ErrNoRoute.
type ReturnedError struct {
	Return ops.Return // the returned message, without leveret's tag header
}

func (e *ReturnedError) Error() string {
	return fmt.Sprintf("amqp: message returned: %d %s (exchange %q, routing key %q)",
		e.Return.ReplyCode, e.Return.ReplyText, e.Return.Exchange, e.Return.RoutingKey)
}

// Is matches reply-code sentinels such as ErrNoRoute.
func (e *ReturnedError) Is(target error) bool {
	return matchCode(target, e.Return.ReplyCode)
}

func notConfirmed(cause error) error { return fmt.Errorf("%w: %w", ErrNotConfirmed, cause) }

// tagHeader carries a mandatory client-level publish's delivery tag, so a
// basic.return is linked to its publish exactly (wire order does not link
// them; see confirm.SeqHeader, the same header). It is removed from the
// returned message.
const tagHeader = "x-leveret-publish-seq"

// pubCostOverhead is what one unconfirmed publish costs besides its body,
// counted against WithUnconfirmedLimit.
const pubCostOverhead = 256

// clientPub is one Client.Publish until it is settled. It is its own
// pooled operation, so that operations on other channels that name its
// entity wait for its confirmation.
type clientPub struct {
	op       pooledOp
	pool     *pool
	m        proto.BasicPublish
	msg      ops.Message // private copy: re-sent if the broker discards it
	buf      *[]byte     // msg.Body's pooled buffer, if it has one (see bodybuf.go)
	hold     *bodyHold   // with buf: writes of the body in flight, a confirmation waiting for them
	cost     int
	prom     *Promise[struct{}]
	ret      *ops.Return // basic.return received; the ack that follows settles it
	sent     uint64      // place in its channel's send order (see mux.Channel.FailedAt)
	reissued int
	// ctx is the publish's context while it waits for an operation on
	// another channel: if it ends first, the publish is not sent.
	ctx context.Context
	// With publish hooks: what they were shown, and the context OnPublish
	// returned, for OnPublishDone.
	hinfo *PublishInfo
	hctx  context.Context
}

func newClientPub(o *ops.Publish, prom *Promise[struct{}]) *clientPub {
	pub := &clientPub{
		m:    proto.BasicPublish{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory},
		msg:  o.Message,
		prom: prom,
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
	return pub
}

// pubTracker follows the client-level publishes on one pooled channel, in
// confirm mode since its open. Tags count from 1 in wire order: a publish
// takes its tag and is queued for the socket under mu.
type pubTracker struct {
	pool     *pool
	isolated bool // the isolation channel: one suspect at a time

	mu    sync.Mutex
	next  uint64       // tag of the next publish
	first uint64       // tag of ents[0]
	ents  []*clientPub // unconfirmed in tag order; nil once settled
	ended bool
	// requests counts the pool's topology operations awaiting a reply on
	// this channel. When the channel ends, those the broker discarded are
	// re-issued from their completions; the publishes to re-send wait in
	// stash until the last of them has been, so that a publish goes out
	// again behind the declare it was issued behind.
	requests int
	stash    []*clientPub
	stashErr error

	scratch []*clientPub // reader only: publishes one confirmation settles
}

// send queues pub on ch. It never waits for room; an error means nothing
// was sent.
func (t *pubTracker) send(ch *pooledChannel, pub *clientPub) error {
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
	var stash []*clientPub
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
func (t *pubTracker) resendAfterRequests(pubs []*clientPub, cause error) {
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
func (t *pubTracker) end() (unconfirmed []*clientPub, requests bool) {
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

// confirmed settles the publish from the broker's basic.ack or basic.nack.
// A pooled body may still be being written (a peer that confirms what it
// has not read): then the last write settles it (bodyWritten).
func (pub *clientPub) confirmed(ack bool) {
	if pub.buf != nil && pub.hold.confirmWaits(ack) {
		return
	}
	pub.settleConfirmed(ack)
}

// settleConfirmed settles the publish from a confirmation once nothing
// writes its body any more: the broker has read all of it, so its body's
// buffer can be reused.
func (pub *clientPub) settleConfirmed(ack bool) {
	var err error
	switch {
	case !ack:
		err = ErrNacked
	case pub.ret != nil:
		err = &ReturnedError{Return: *pub.ret}
	}
	buf := pub.buf
	pub.buf = nil
	pub.settle(err, buf)
}

// finish settles the publish, gives back its budget and releases the
// operations that waited for it. Its body is left to the collector: a
// write may still be queued that reads it.
func (pub *clientPub) finish(err error) { pub.settle(err, nil) }

// settle is finish, then gives buf back once nothing reads the body: after
// the OnPublishDone hooks, which are shown it.
func (pub *clientPub) settle(err error, buf *[]byte) {
	p := pub.pool
	p.budget.release(pub.cost)
	p.finish(&pub.op, nil, nil, err)
	if pub.hinfo != nil {
		// settle may run on the reader goroutine: hooks run on the dispatcher.
		h, ctx, info := p.c.hooks, pub.hctx, pub.hinfo
		p.c.dispatch.post(func() {
			h.donePublish(ctx, info, err)
			releaseBody(buf)
		})
		return
	}
	releaseBody(buf)
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

// publish issues a client-level publish. An error means nothing was sent
// and the budget is not held.
func (p *pool) publish(ctx context.Context, o *ops.Publish, prom *Promise[struct{}]) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	pub := newClientPub(o, prom)
	if h := p.c.hooks; h.publishes() {
		pub.hinfo = &PublishInfo{Exchange: o.Exchange, RoutingKey: o.RoutingKey, Mandatory: o.Mandatory, Message: &pub.msg, Confirmed: true}
		ctx = h.runPublish(ctx, pub.hinfo) // pub.msg has its own headers table already
		pub.hctx = ctx
	}
	if err := p.budget.acquire(ctx, pub.cost); err != nil {
		if pub.hinfo != nil {
			p.c.hooks.donePublish(ctx, pub.hinfo, err)
		}
		return err
	}
	key := entityKey('e', o.Exchange)
	if o.Exchange == "" {
		key = entityKey('q', o.RoutingKey)
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
		g, err := p.waitLive(ctx)
		if err == nil {
			if err = g.conn.WaitPublishRoom(ctx); err != nil && ctx.Err() == nil && p.reconnects() && connLost(err) {
				continue // lost meanwhile: wait for the next one
			}
		}
		if err == nil {
			err = p.sendPub(pub)
		}
		if err != nil {
			pub.finish(err) // nothing was sent; unblock whoever queued behind it
			return err
		}
		return nil
	}
}

// sendPub puts pub on its slot's channel, taking a fresh one if that
// channel ended under it, or parks it until the next connection. It never
// waits.
func (p *pool) sendPub(pub *clientPub) error {
	err := p.sendVia(pub, func() (*pooledChannel, *generation, error) {
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
func (p *pool) sendVia(pub *clientPub, open func() (*pooledChannel, *generation, error)) error {
	for {
		ch, g, err := open()
		if err == nil {
			err = ch.pubs.send(ch, pub)
			if err == nil {
				p.sentOn(&pub.op, ch)
				return nil
			}
			if ch != nil && retryFresh(ch.mc, ch.gen, pub.reissued) {
				pub.reissued++
				continue
			}
		}
		if connLost(err) {
			p.resendLater(pub, g, err)
			return errParked
		}
		return err // refused by the codec, or nothing left to try
	}
}

// resendLater sends pub on the next connection (at-least-once: it may have
// arrived on the lost one), or fails it as not confirmed if there is none.
func (p *pool) resendLater(pub *clientPub, seen *generation, err error) {
	p.retryLater(seen, err, func() {
		if err := p.sendPub(pub); err != nil {
			pub.finish(notConfirmed(err))
		}
	}, func(err error) { pub.finish(notConfirmed(err)) })
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
func (p *pool) publishesEnded(ch *pooledChannel, err error) {
	t := ch.pubs
	pubs, requests := t.end()
	if len(pubs) == 0 {
		if t.isolated {
			p.isolateNext()
		}
		return
	}
	if isConnectionError(err) {
		// In doubt: re-sent on the next connection if the client
		// reconnects, else failed as not confirmed.
		for _, pub := range pubs {
			if pub.ret != nil {
				pub.finish(&ReturnedError{Return: *pub.ret})
				continue
			}
			p.resendLater(pub, ch.gen, err)
		}
		if t.isolated {
			p.isolateNext() // the suspects still queued fail too: nothing can send them
		}
		return
	}
	var ce *ChannelError
	blamed := errors.As(err, &ce) && ce.ClassID == 60 && ce.MethodID == 40 // basic.publish
	culprit := -1                                                          // index in pubs
	exchange, named := "", false
	switch {
	case !blamed:
	case t.isolated:
		// One suspect at a time is in flight here: it is the culprit.
		culprit = firstUnreturned(pubs, func(*clientPub) bool { return true })
	default:
		if exchange, named = namedExchange(ce.Text); named {
			culprit = firstUnreturned(pubs, func(pub *clientPub) bool { return pub.m.Exchange == exchange })
		}
	}
	failedAt := ch.mc.FailedAt() // a topology operation's place, when one failed
	var suspects, again []*clientPub
	for i, pub := range pubs {
		switch {
		case pub.ret != nil:
			pub.finish(&ReturnedError{Return: *pub.ret})
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
func firstUnreturned(pubs []*clientPub, match func(*clientPub) bool) int {
	for i, pub := range pubs {
		if pub.ret == nil && match(pub) {
			return i
		}
	}
	return -1
}

// resend sends pub again after its channel ended with cause.
func (p *pool) resend(pub *clientPub, cause error) {
	if pub.reissued >= maxReissues {
		pub.finish(notConfirmed(cause))
		return
	}
	pub.reissued++
	if err := p.sendPub(pub); err != nil {
		pub.finish(notConfirmed(err))
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
