package mux

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// ErrChannelLimit reports that every channel number is in use.
var ErrChannelLimit = errors.New("amqp: no free channel number (channel_max reached)")

// Handler receives a channel's asynchronous traffic. Both methods run on the
// reader goroutine and must not block.
type Handler interface {
	// Async gets basic.deliver and basic.return (with msg), and basic.ack,
	// basic.nack, basic.cancel and channel.flow from the broker (msg nil).
	// msg is valid only during the call, but msg.Body is the receiver's.
	Async(m proto.Method, msg *ops.Message)
	// Closed is called once when the channel ends, with the reason.
	Closed(err error)
	// Oversized gets a basic.deliver or basic.return whose body, of size
	// octets, was over Config.MaxMessageSize: it was skipped as it
	// arrived, never buffered, and the connection goes on. The handler
	// refuses it (basic.reject without requeue, unless no-ack) and
	// reports it.
	Oversized(m proto.Method, size uint64)
}

// Request is one operation sent on a channel.
type Request struct {
	Method proto.Method
	Msg    *ops.Message // content, for basic.publish
	// Tag matches basic.consume-ok and basic.cancel-ok by consumer tag.
	Tag string
	// Barrier holds every later send on the channel until this request's
	// reply arrives (tx.commit, tx.rollback).
	Barrier bool
	// Done, if set, gets the reply or the error that ended the wait, exactly
	// once, on the reader goroutine; it must not block. For basic.get-ok,
	// msg is valid only during the call (msg.Body is the receiver's).
	// A request without Done expects no reply.
	Done func(reply proto.Method, msg *ops.Message, err error)
	// Written, if set, is called once the frames reach the socket or cannot.
	Written func(error)
	// Blame is set by the reader, before Done gets the connection's error,
	// when the broker closed the connection naming this request's method
	// (see Blame). Done may read it; nothing else should.
	Blame Blame

	seq uint64 // its place in the channel's send order, once sent
}

// Channel is one AMQP channel on a Conn.
type Channel struct {
	ID uint16
	c  *Conn
	h  Handler

	// ended is closed once the channel has ended and its handler's Closed
	// has returned (see Ended).
	ended chan struct{}

	mu      sync.Mutex
	pending []*Request // awaiting replies, oldest first; nil where one was matched early
	held    []*Request // sends waiting behind a barrier
	barrier bool       // a barrier request is pending
	closing bool       // channel.close issued by us
	// closeSent: our channel.close is on the wire and its close-ok has not
	// arrived. If the broker's close crosses it, the number stays taken
	// until that close-ok (the broker sends it), so that it cannot land on
	// a new channel with the same number.
	closeSent bool
	err       error // why the channel ended; nil while open
	// sent counts the requests and publishes queued on the channel, in wire
	// order; failedAt is the count of the request the broker blamed when it
	// closed the channel (0 if none): what was sent before it was processed.
	sent     uint64
	failedAt uint64
	// confirmMode is set once confirm.select is accepted; tags then counts
	// the publishes accepted after it, in the channel's order (held ones
	// included: they go out in that order or not at all): the broker's
	// delivery tag of the last one.
	confirmMode bool
	tags        uint64
	// channel.flow from the peer: while paused, publishes are held in
	// flowHeld (in order) and Publish calls with a ctx wait on flowResume.
	flowPaused bool
	flowHeld   []*Request
	flowResume chan struct{}

	// Reader goroutine only.
	asm             assembly           // content being assembled
	lastDeliveryTag uint64             // of the last basic.deliver or basic.get-ok
	deliver         proto.BasicDeliver // reused for every basic.deliver
	lastProps       ops.Message        // previous content's string properties, for reuse
}

type assembly struct {
	m      proto.Method // the content-bearing method; nil when idle
	msg    ops.Message
	size   uint64
	got    uint64 // body octets received
	header bool
	drop   bool // over MaxMessageSize: the body is skipped, not kept
}

type nopHandler struct{}

func (nopHandler) Async(proto.Method, *ops.Message) {}
func (nopHandler) Closed(error)                     {}
func (nopHandler) Oversized(proto.Method, uint64)   {}

// OpenChannel is NewChannel followed by Open.
func (c *Conn) OpenChannel(h Handler, opened func(error)) (*Channel, error) {
	ch := c.NewChannel(h)
	if err := ch.Open(opened); err != nil {
		return nil, err
	}
	return ch, nil
}

// NewChannel makes a channel with handler h that is not open yet: it has
// no number and the reader cannot reach it, so nothing is called on h
// until Open. An owner links the channel to its own state first, so that
// no frame the peer sends and no end of the connection can reach a
// channel its owner has not finished setting up.
func (c *Conn) NewChannel(h Handler) *Channel {
	if h == nil {
		h = nopHandler{}
	}
	return &Channel{c: c, h: h, ended: make(chan struct{})}
}

// Open allocates a channel number, registers the channel with the reader
// and queues channel.open without waiting for channel.open-ok: operations
// issued on the channel at once are pipelined behind it. opened, if set,
// gets the outcome of the open. From the moment Open is called the handler
// may be called, on the reader, before Open returns. An error means
// nothing was sent; a Channel is opened at most once.
func (ch *Channel) Open(opened func(error)) error {
	c := ch.c
	if c.closing.Load() {
		return c.closedErr()
	}
	c.cmu.Lock()
	if c.chansDead {
		c.cmu.Unlock()
		return c.closedErr()
	}
	id, ok := c.allocIDLocked()
	if !ok {
		c.cmu.Unlock()
		return c.cfg.Errors.ChannelLimit
	}
	ch.ID = id
	c.chans[id] = ch
	c.cmu.Unlock()
	err := ch.Call(&Request{Method: &proto.ChannelOpen{}, Done: func(_ proto.Method, _ *ops.Message, err error) {
		if opened != nil {
			opened(err)
		}
	}})
	if err != nil {
		c.release(ch)
		return err
	}
	return nil
}

// allocIDLocked picks the next free number after the last one handed out,
// so a number just released is not reused at once.
func (c *Conn) allocIDLocked() (uint16, bool) {
	max := c.cfg.ChannelMax
	for range int(max) {
		c.nextID++
		if c.nextID == 0 || c.nextID > max {
			c.nextID = 1
		}
		if _, used := c.chans[c.nextID]; !used {
			return c.nextID, true
		}
	}
	return 0, false
}

func (c *Conn) release(ch *Channel) {
	c.cmu.Lock()
	if c.chans[ch.ID] == ch {
		delete(c.chans, ch.ID)
	}
	c.cmu.Unlock()
}

// Ended is closed once the channel has ended (Err is set) and its
// handler's Closed has returned: an owner that sees Err set can wait here
// for its handler to have been told, instead of polling.
func (ch *Channel) Ended() <-chan struct{} { return ch.ended }

// Err is nil while the channel is open, then the reason it ended.
func (ch *Channel) Err() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.err
}

// Call sends r without waiting for room in the output queue or for a reply.
// An error means nothing was sent and Done will not be called.
func (ch *Channel) Call(r *Request) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.usableLocked(); err != nil {
		return err
	}
	if _, ok := r.Method.(*proto.ConfirmSelect); ok {
		ch.confirmMode = true // the publishes accepted from now on are numbered
	}
	if ch.barrier {
		ch.held = append(ch.held, r)
		return nil
	}
	return ch.sendLocked(r)
}

// Publish sends basic.publish with its content. It waits, honouring ctx,
// while the output queue is full or the broker has blocked the connection,
// and sends nothing if ctx has ended; with a nil ctx it does not wait (for
// sends made on the reader goroutine, or after WaitPublishRoom).
// The method, header and body frames go out contiguously. msg is encoded
// before Publish returns unless a barrier is pending, in which case it is
// copied; either way the caller may reuse msg.Body afterwards. A large body
// on a TCP connection is written from msg.Body itself, and Publish returns
// once it has been (see writeThrough).
func (ch *Channel) Publish(ctx context.Context, m *proto.BasicPublish, msg *ops.Message, written func(error)) error {
	if ctx == nil {
		_, _, err := ch.publish(m, msg, false, written)
		return err
	}
	if err := ch.c.WaitPublishRoom(ctx); err != nil {
		return err
	}
	if err := ch.waitFlow(ctx); err != nil {
		return err
	}
	if ch.c.writesThrough(msg) {
		return ch.writeThrough(ctx, m, msg, written)
	}
	_, _, err := ch.publish(m, msg, false, written)
	return err
}

// waitFlow waits, honouring ctx, while the peer has paused publishing on
// the channel (channel.flow active=false).
func (ch *Channel) waitFlow(ctx context.Context) error {
	ch.mu.Lock()
	for ch.flowPaused && ch.err == nil {
		resume := ch.flowResume
		ch.mu.Unlock()
		select {
		case <-resume:
		case <-ctx.Done():
			return ctx.Err()
		}
		ch.mu.Lock()
	}
	ch.mu.Unlock()
	return nil
}

// setFlow applies channel.flow from the peer: a pause holds publishes, a
// resume sends them in order. It runs on the reader.
func (ch *Channel) setFlow(active bool) {
	ch.mu.Lock()
	if ch.err != nil || ch.flowPaused == !active {
		ch.mu.Unlock()
		return
	}
	if !active {
		ch.flowPaused, ch.flowResume = true, make(chan struct{})
		ch.mu.Unlock()
		return
	}
	ch.flowPaused = false
	close(ch.flowResume)
	ch.flowResume = nil
	held := ch.flowHeld
	ch.flowHeld = nil
	var failed []*Request
	var failErr error
	for i, r := range held {
		if err := ch.sendLocked(r); err != nil {
			failed, failErr = held[i:], err
			break
		}
	}
	ch.mu.Unlock()
	for _, r := range failed { // completions run with no lock held
		r.fail(failErr)
	}
}

// PublishNow sends basic.publish with its content like Publish with a nil
// ctx and no write callback, and returns the publish's place in the
// channel's send order (0 if it is held behind a barrier and has none yet),
// to compare with FailedAt.
func (ch *Channel) PublishNow(m *proto.BasicPublish, msg *ops.Message) (uint64, error) {
	sent, _, err := ch.publish(m, msg, false, nil)
	return sent, err
}

// PublishShared is PublishNow for a body the caller never changes again
// (a private copy kept until it is confirmed): large body frames are
// written from msg.Body itself instead of being copied into the output
// queue. The queue holds msg.Body until the frames are written or the
// connection ends; written, if set, is called (on the writer) once nothing
// reads msg.Body any more: the frames were written, or never will be.
func (ch *Channel) PublishShared(m *proto.BasicPublish, msg *ops.Message, written func(error)) (uint64, error) {
	sent, _, err := ch.publish(m, msg, true, written)
	return sent, err
}

// publish queues the publish, or holds a copy of it behind a barrier or a
// flow pause. With shared, large body frames are queued by reference and
// the queuedRefs name them (empty when held: the copy is private).
func (ch *Channel) publish(m *proto.BasicPublish, msg *ops.Message, shared bool, written func(error)) (uint64, queuedRefs, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.usableLocked(); err != nil {
		return 0, queuedRefs{}, err
	}
	if ch.barrier || ch.flowPaused {
		cp := *msg
		cp.Body = append([]byte(nil), msg.Body...)
		pm := *m
		r := &Request{Method: &pm, Msg: &cp, Written: written}
		if ch.barrier {
			ch.held = append(ch.held, r)
		} else {
			ch.flowHeld = append(ch.flowHeld, r)
		}
		if ch.confirmMode {
			ch.tags++
		}
		return 0, queuedRefs{}, nil
	}
	q, err := ch.c.enqueuePublish(ch.ID, m, msg, shared, written)
	if err != nil {
		return 0, queuedRefs{}, err
	}
	ch.sent++
	if ch.confirmMode {
		ch.tags++
	}
	return ch.sent, q, nil
}

// PublishTags is, in confirm mode, the number of publishes accepted since
// confirm.select, queued or held behind a barrier or a flow pause: the
// delivery tag the broker gives the last of them, if they all go out. It
// counts under the channel's lock as each is accepted, so once the channel
// has ended it is final: none refused by the ended channel is counted, none
// accepted is missed, and a held one that never went out counts as sent
// before the end (it will never be confirmed).
func (ch *Channel) PublishTags() uint64 {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.tags
}

// FailedAt is, once the broker has closed the channel blaming a request, that
// request's place in the send order: the broker processed everything sent
// before it and discarded everything after. It is 0 while the channel is
// open, and when the close named no pending request.
func (ch *Channel) FailedAt() uint64 {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.failedAt
}

// Ack is one basic.ack to queue.
type Ack struct {
	Tag      uint64
	Multiple bool
	// Cumulative says that once this ack is made no delivery with a tag at
	// or below Tag is outstanding on the channel (always true of a multiple
	// ack): then "everything up to Tag" names exactly the deliveries this
	// ack and an ack of a lower tag queued just before it acknowledge, so
	// the two may go out as one multiple ack. A consumer acking each
	// delivery in order thus costs the broker one ack per write rather than
	// one per message.
	Cumulative bool
}

// Ack queues a without waiting; an error means nothing was sent.
func (ch *Channel) Ack(a Ack) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.usableLocked(); err != nil {
		return err
	}
	if ch.barrier {
		ch.held = append(ch.held, &Request{Method: &proto.BasicAck{DeliveryTag: a.Tag, Multiple: a.Multiple}})
		return nil
	}
	return ch.c.enqueueAck(ch.ID, a)
}

// Close queues channel.close behind everything sent so far. done gets nil
// once the broker answers close-ok, or the error that ended the channel.
func (ch *Channel) Close(done func(error)) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.usableLocked(); err != nil {
		return err
	}
	r := &Request{
		Method: &proto.ChannelClose{ReplyCode: uint16(proto.ReplySuccess), ReplyText: "closed by client"},
		Done:   func(_ proto.Method, _ *ops.Message, err error) { done(err) },
	}
	var err error
	if ch.barrier {
		ch.held = append(ch.held, r)
	} else {
		err = ch.sendLocked(r)
	}
	if err == nil {
		ch.closing = true
	}
	return err
}

func (ch *Channel) usableLocked() error {
	switch {
	case ch.err != nil:
		return ch.err
	case ch.c.closing.Load():
		return ch.c.closedErrByUs
	case ch.closing:
		return ch.closedByUs()
	}
	return nil
}

// closedByUs is the error of a channel this side closed.
func (ch *Channel) closedByUs() error {
	return &contextError{fmt.Sprintf("amqp: channel %d closed by this client (Close)", ch.ID), ch.c.cfg.Errors.Closed}
}

func (ch *Channel) sendLocked(r *Request) error {
	var err error
	p, publish := r.Method.(*proto.BasicPublish)
	publish = publish && r.Msg != nil
	if publish && ch.flowPaused {
		ch.flowHeld = append(ch.flowHeld, r) // released from a barrier into a pause
		return nil
	}
	if publish {
		_, err = ch.c.enqueuePublish(ch.ID, p, r.Msg, false, r.Written)
	} else {
		err = ch.c.enqueueMethod(ch.ID, r.Method, r.Written)
	}
	if err != nil {
		return err
	}
	ch.sent++
	r.seq = ch.sent
	if _, ok := r.Method.(*proto.ChannelClose); ok {
		ch.closeSent = true
	}
	if r.Done != nil {
		ch.pending = append(ch.pending, r)
	}
	if r.Barrier {
		ch.barrier = true
	}
	return nil
}
