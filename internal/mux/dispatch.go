package mux

import (
	"fmt"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// handleMethod routes one method frame the broker sent on this channel.
// It runs on the reader goroutine.
func (ch *Channel) handleMethod(m proto.Method) error {
	if ch.asm.m != nil {
		return ch.c.violation(proto.UnexpectedFrame, "%v on channel %d while content of %v was expected", m.ID(), ch.ID, ch.asm.m.ID())
	}
	if m.ID().HasContent() {
		if err := ch.checkDeliveryTag(m); err != nil {
			return err
		}
		ch.asm = assembly{m: m}
		return nil
	}
	switch m := m.(type) {
	case *proto.ChannelClose:
		failed := proto.MethodID(uint32(m.ClassID)<<16 | uint32(m.MethodID))
		err := ch.c.faultError(Fault{Code: proto.ReplyCode(m.ReplyCode), Text: m.ReplyText, Method: failed})
		// close-ok is queued in the same critical section that ends the
		// channel, so no send can slip in behind it: a frame on a channel
		// the broker considers closed is a connection error (504).
		ch.mu.Lock()
		ch.c.enqueueMethod(ch.ID, &proto.ChannelCloseOk{}, nil)
		pending, held, ended := ch.endLocked(err)
		for _, r := range pending { // the request finish will blame
			if r != nil && r.Method.ID() == failed {
				ch.failedAt = r.seq
				break
			}
		}
		// Our own channel.close crossed this one: the broker answers it
		// with close-ok, and the number is free only after that arrives.
		keep := ch.closeSent
		ch.mu.Unlock()
		if !keep {
			ch.c.release(ch)
		}
		if ended {
			ch.finish(err, &failed, nil, pending, held)
		}
		return nil
	case *proto.ChannelCloseOk:
		ch.mu.Lock()
		if ch.err != nil && ch.closeSent {
			// The answer to our close that crossed the broker's: the
			// channel ended at the broker's close; now its number is free.
			ch.closeSent = false
			ch.mu.Unlock()
			ch.c.release(ch)
			return nil
		}
		r := ch.takeMatchLocked(m)
		var pending, held []*Request
		ended := false
		closed := ch.closedByUs()
		if r != nil {
			pending, held, ended = ch.endLocked(closed)
		}
		ch.mu.Unlock()
		if r == nil {
			return ch.c.violation(proto.CommandInvalid, "unexpected %v on channel %d", m.ID(), ch.ID)
		}
		ch.c.release(ch)
		if ended {
			ch.finish(closed, nil, func() { r.Done(m, nil, nil) }, pending, held)
		} else {
			r.Done(m, nil, nil)
		}
		return nil
	case *proto.ChannelFlow:
		// flow-ok first: publishes a resume releases go out behind it.
		ch.c.enqueueMethod(ch.ID, &proto.ChannelFlowOk{Active: m.Active}, nil)
		ch.setFlow(m.Active)
		ch.h.Async(m, nil)
		return nil
	case *proto.BasicCancel:
		if !m.NoWait {
			ch.c.enqueueMethod(ch.ID, &proto.BasicCancelOk{ConsumerTag: m.ConsumerTag}, nil)
		}
		ch.h.Async(m, nil)
		return nil
	case *proto.BasicAck, *proto.BasicNack:
		ch.h.Async(m, nil)
		return nil
	}
	return ch.reply(m, nil)
}

// maxBrokerMessage is the largest message RabbitMQ can be configured to
// take (max_message_size is capped at 512 MiB): a header announcing more
// than that, and more than MaxMessageSize, is a broken peer, not a message
// to skip; skipping would read its stream for ever.
const maxBrokerMessage = 512 << 20

// dropOversized refuses a message whose body was over MaxMessageSize (and
// was skipped): the get that asked for it fails with Errors.TooLarge, and
// the message is rejected without requeue (a dead-letter exchange gets
// it) unless it came with no-ack; a delivery or a return goes to the
// handler (Handler.Oversized), which knows its consumer. It runs on the
// reader.
func (ch *Channel) dropOversized(m proto.Method, size uint64) error {
	ok, isGet := m.(*proto.BasicGetOk)
	if !isGet {
		ch.h.Oversized(m, size)
		return nil
	}
	ch.mu.Lock()
	r := ch.takeMatchLocked(m)
	ch.mu.Unlock()
	if r == nil {
		return ch.c.violation(proto.CommandInvalid, "unexpected %v on channel %d", m.ID(), ch.ID)
	}
	if get, _ := r.Method.(*proto.BasicGet); get == nil || !get.NoAck {
		ch.Call(&Request{Method: &proto.BasicReject{DeliveryTag: ok.DeliveryTag}})
	}
	r.Done(nil, nil, fmt.Errorf("%w: a message of %d bytes from queue %q is over the limit of %d bytes; rejected without requeue",
		ch.c.cfg.Errors.TooLarge, size, queueOf(r.Method), ch.c.cfg.MaxMessageSize))
	return nil
}

func queueOf(m proto.Method) string {
	if g, ok := m.(*proto.BasicGet); ok {
		return g.Queue
	}
	return ""
}

// checkDeliveryTag refuses a basic.deliver or basic.get-ok whose delivery
// tag does not follow the channel's last one. The broker numbers a
// channel's deliveries 1, 2, 3... (RabbitMQ keeps one counter per channel
// for both), and acks depend on that order: "multiple" acknowledges every
// tag up to the one given, and the outstanding tags are kept sorted. A
// repeated or smaller tag could make an ack settle the wrong delivery, so
// it is a protocol violation, not something to cope with.
func (ch *Channel) checkDeliveryTag(m proto.Method) error {
	var tag uint64
	switch m := m.(type) {
	case *proto.BasicDeliver:
		tag = m.DeliveryTag
	case *proto.BasicGetOk:
		tag = m.DeliveryTag
	default:
		return nil
	}
	if tag <= ch.lastDeliveryTag {
		return ch.c.violation(proto.CommandInvalid, "delivery tag %d on channel %d does not increase (the last was %d)", tag, ch.ID, ch.lastDeliveryTag)
	}
	ch.lastDeliveryTag = tag
	return nil
}

// handleContent adds a header or body frame to the content being assembled
// and dispatches the method once the body is complete.
func (ch *Channel) handleContent(typ uint8, payload []byte) error {
	a := &ch.asm
	if a.m == nil {
		return ch.c.violation(proto.UnexpectedFrame, "content frame on channel %d without a method", ch.ID)
	}
	if typ == proto.FrameHeader {
		if a.header {
			return ch.c.violation(proto.UnexpectedFrame, "second content header on channel %d", ch.ID)
		}
		_, size, err := proto.DecodeContentHeaderReusing(payload, &a.msg, &ch.lastProps)
		if err != nil {
			return ch.c.violation(proto.FrameError, "bad content header: %v", err)
		}
		if size > max(ch.c.cfg.MaxMessageSize, maxBrokerMessage) {
			return ch.c.violation(proto.ResourceError, "message of %d bytes on channel %d is larger than any broker sends (limit %d bytes, WithMaxMessageSize %d)",
				size, ch.ID, maxBrokerMessage, ch.c.cfg.MaxMessageSize)
		}
		a.size, a.header = size, true
		// Over the limit, the body is skipped as it arrives, never
		// buffered, and the message is refused once it is whole (see
		// dropOversized): the connection and the consumer go on.
		a.drop = size > ch.c.cfg.MaxMessageSize
		if size > 0 && !a.drop {
			ch.c.reserveBody(a, 0)
		}
	} else {
		if !a.header {
			return ch.c.violation(proto.UnexpectedFrame, "body frame on channel %d before its header", ch.ID)
		}
		if a.got+uint64(len(payload)) > a.size {
			return ch.c.violation(proto.FrameError, "body on channel %d longer than its header said", ch.ID)
		}
		a.got += uint64(len(payload))
		if !a.drop {
			if len(a.msg.Body)+len(payload) > cap(a.msg.Body) {
				ch.c.reserveBody(a, len(payload))
			}
			a.msg.Body = append(a.msg.Body, payload...)
		}
	}
	if !a.header || a.got < a.size {
		return nil
	}
	if a.drop {
		m, size := a.m, a.size
		ch.asm = assembly{}
		return ch.dropOversized(m, size)
	}
	m := a.m
	ch.c.bodyReserved -= cap(a.msg.Body) // the body is the receiver's from here
	defer func() {
		ch.lastProps = a.msg
		ch.lastProps.Body, ch.lastProps.Headers = nil, nil
		ch.asm = assembly{}
	}()
	if _, ok := m.(*proto.BasicGetOk); ok {
		return ch.reply(m, &a.msg)
	}
	ch.h.Async(m, &a.msg)
	return nil
}

// reply completes the oldest pending request that expects m (by consumer
// tag for consume-ok and cancel-ok) and releases sends held behind it if it
// was a barrier. A reply nobody asked for is a protocol violation.
func (ch *Channel) reply(m proto.Method, msg *ops.Message) error {
	ch.mu.Lock()
	r := ch.takeMatchLocked(m)
	var failed []*Request
	var failErr error
	if r != nil && r.Barrier {
		ch.barrier = false
		failed, failErr = ch.releaseHeldLocked()
	}
	ch.mu.Unlock()
	if r == nil {
		return ch.c.violation(proto.CommandInvalid, "unexpected %v on channel %d", m.ID(), ch.ID)
	}
	r.Done(m, msg, nil)
	for _, f := range failed {
		f.fail(failErr)
	}
	return nil
}

func (ch *Channel) takeMatchLocked(m proto.Method) *Request {
	id, tag := m.ID(), ""
	switch m := m.(type) {
	case *proto.BasicConsumeOk:
		tag = m.ConsumerTag
	case *proto.BasicCancelOk:
		tag = m.ConsumerTag
	}
	for i, r := range ch.pending {
		if r == nil || !expects(r.Method.ID(), id) || r.Tag != tag {
			continue
		}
		if i == 0 {
			ch.pending = trimFront(ch.pending[1:])
		} else {
			ch.pending[i] = nil
		}
		return r
	}
	return nil
}

// trimFront drops leading holes left by replies matched out of order.
func trimFront(p []*Request) []*Request {
	for len(p) > 0 && p[0] == nil {
		p = p[1:]
	}
	if len(p) == 0 {
		return p[:0:0]
	}
	return p
}

func expects(req, reply proto.MethodID) bool {
	for _, r := range req.Replies() {
		if r == reply {
			return true
		}
	}
	return false
}

// releaseHeldLocked sends what waited behind a barrier, up to the next one.
// If sending fails, the rest are returned to be failed outside the lock.
func (ch *Channel) releaseHeldLocked() ([]*Request, error) {
	for len(ch.held) > 0 && !ch.barrier {
		r := ch.held[0]
		ch.held = ch.held[1:]
		if err := ch.sendLocked(r); err != nil {
			rest := append([]*Request{r}, ch.held...)
			ch.held = nil
			return rest, err
		}
	}
	return nil, nil
}

func (r *Request) fail(err error) {
	if r.Done != nil {
		r.Done(nil, nil, err)
	}
	if r.Written != nil {
		r.Written(err)
	}
}

// end closes the channel for good with err. When the broker closed it
// because a method failed, the oldest pending request for that method
// gets err and every other pending or held request gets an ErrNotExecuted
// error wrapping err: the broker discarded them. Otherwise (connection
// failure, our own close) every request gets err.
func (ch *Channel) end(err error, failed *proto.MethodID) {
	ch.mu.Lock()
	pending, held, ended := ch.endLocked(err)
	ch.mu.Unlock()
	if ended {
		ch.finish(err, failed, nil, pending, held)
	}
}

// endLocked records why the channel ended and takes its requests; ended is
// false if it had already ended.
func (ch *Channel) endLocked(err error) (pending, held []*Request, ended bool) {
	if ch.err != nil {
		return nil, nil, false
	}
	ch.err = err
	pending, held = ch.pending, append(ch.held, ch.flowHeld...)
	ch.pending, ch.held, ch.barrier, ch.flowHeld = nil, nil, false, nil
	if ch.flowResume != nil { // waiters in waitFlow see the end
		close(ch.flowResume)
		ch.flowResume = nil
	}
	return pending, held, true
}

// finish tells the handler the channel ended before settling any request,
// so whoever sees a request fail can already read why the channel ended.
// first, if set, runs after the handler and before the other requests.
func (ch *Channel) finish(err error, failed *proto.MethodID, first func(), pending, held []*Request) {
	ch.h.Closed(err)
	close(ch.ended)
	if first != nil {
		first()
	}
	blamed := failed == nil
	for _, r := range append(pending, held...) {
		if r == nil {
			continue
		}
		switch {
		case failed == nil:
			r.fail(err)
		case !blamed && r.Method.ID() == *failed, r.Method.ID() == proto.ChannelCloseID:
			blamed = blamed || r.Method.ID() == *failed
			r.fail(err)
		default:
			r.fail(ch.c.notExecuted(err))
		}
	}
}

// Memory for a body being assembled is reserved ahead of its bytes only
// within a per-connection budget: a content header is a few octets, and
// reserving what it announces on every channel would let a peer make us
// hold gigabytes it never sends (2,047 channels × 8 MiB). Past the budget
// a body grows as its bytes arrive, doubling, so it never holds more than
// twice what was received.
const (
	maxBodyPrealloc   = 8 << 20  // the most one header reserves ahead
	bodyReserveBudget = 16 << 20 // reserved ahead across the connection's channels
	minBodyGrowth     = 4 << 10  // the first allocation of a body grown from nothing
)

// reserveBody makes room in a's body for next more bytes (0 at the
// header): all of the announced size while the connection's budget allows
// (one allocation, as before), else by doubling. It runs on the reader,
// which alone touches bodyReserved.
func (c *Conn) reserveBody(a *assembly, next int) {
	have, size := cap(a.msg.Body), a.size
	var want uint64
	switch all := min(size, maxBodyPrealloc); {
	case have == 0 && c.bodyReserved+int(all) <= bodyReserveBudget:
		want = all // one allocation, the usual case
	case next == 0:
		return // a header past the budget: nothing until its bytes come
	default:
		want = min(size, uint64(max(2*have, len(a.msg.Body)+next, minBodyGrowth)))
	}
	body := make([]byte, len(a.msg.Body), want)
	copy(body, a.msg.Body)
	c.bodyReserved += cap(body) - have
	a.msg.Body = body
}
