package mux

import (
	"context"
	"fmt"
	"time"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// maxSpareBuffer is the largest write buffer kept for reuse: one huge
// message should not pin its size in memory for the connection's life.
// With a larger WriteLimit the queue routinely fills past it, so the bound
// is twice the limit there: dropping the spare then made every batch grow
// a new buffer from nothing (measured with a 4 MiB limit and 1 MiB bodies:
// 3 MiB allocated and copied per MiB sent, and half the throughput).
const maxSpareBuffer = 4 << 20

// spareBound is the largest write buffer this connection keeps for reuse.
func (c *Conn) spareBound() int { return max(maxSpareBuffer, 2*c.cfg.WriteLimit) }

// enqueue appends frames produced by encode to the output queue under wmu
// and wakes the writer. If encode fails, nothing is queued. written, if not
// nil, is called (on the writer goroutine) once the frames reach the socket
// or can no longer be written.
func (c *Conn) enqueue(encode func([]byte) ([]byte, error), written func(error)) error {
	c.wmu.Lock()
	if c.werr != nil {
		c.wmu.Unlock()
		return c.closedErr()
	}
	n, refs := len(c.wbuf), len(c.wrefs)
	buf, err := encode(c.wbuf)
	if err != nil {
		c.wbuf = c.wbuf[:n]
		c.wrefs = c.wrefs[:refs]
		c.wmu.Unlock()
		return err
	}
	c.wbuf = buf
	for _, r := range c.wrefs[refs:] {
		c.wrefBytes += len(r.Chunk)
	}
	if int64(len(c.wbuf)+c.wrefBytes) > c.backlogLimit() && !c.backedUp.Load() {
		c.backedUp.Store(true)
	}
	if written != nil {
		c.wcbs = append(c.wcbs, written)
	}
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// enqueueAck queues basic.ack (see Channel.Ack). A cumulative ack replaces
// the previous ack of a lower tag on the same channel if that is still the
// last frame queued: nothing was queued between them, so the broker would
// have processed the two back to back, and one multiple ack for tag
// acknowledges the same deliveries.
func (c *Conn) enqueueAck(channel uint16, a Ack) error {
	tag, multiple := a.Tag, a.Multiple
	return c.enqueue(func(dst []byte) ([]byte, error) { // runs under wmu
		if a.Cumulative && tag != 0 && c.ackEnd != 0 && c.ackEnd == len(dst) && c.ackChan == channel && c.ackTag < tag {
			dst = dst[:c.ackStart]
			multiple = true
		}
		start := len(dst)
		m := proto.BasicAck{DeliveryTag: tag, Multiple: multiple}
		dst = proto.AppendAckFrame(dst, channel, &m)
		c.ackStart, c.ackEnd, c.ackChan, c.ackTag = start, 0, channel, tag
		if tag != 0 { // ack(0, multiple) means "all": never merged into
			c.ackEnd = len(dst)
		}
		return dst, nil
	}, nil)
}

// enqueueMethod queues one method frame. A frame larger than the
// negotiated frame_max is refused here, failing only this operation: sent,
// it would make the broker close the whole connection (501).
func (c *Conn) enqueueMethod(channel uint16, m proto.Method, written func(error)) error {
	frameMax := c.cfg.FrameMax
	return c.enqueue(func(dst []byte) ([]byte, error) {
		out, err := proto.AppendMethodFrame(dst, channel, m)
		if err == nil && frameMax != 0 && len(out)-len(dst) > int(frameMax) {
			return dst, fmt.Errorf("%w: %v frame of %d bytes does not fit the negotiated frame_max %d",
				proto.ErrFrameTooLarge, m.ID(), len(out)-len(dst), frameMax)
		}
		return out, err
	}, written)
}

// enqueuePublish queues a publish's frames. With shared, body frames of
// proto.MinBodyRef bytes or more are queued by reference, not copied: the
// caller promises msg.Body stays unchanged until they are written (see
// Channel.PublishShared and writeThrough). The queuedRefs it returns name
// those references, empty if there are none.
func (c *Conn) enqueuePublish(channel uint16, m *proto.BasicPublish, msg *ops.Message, shared bool, written func(error)) (queuedRefs, error) {
	frameMax := c.cfg.FrameMax
	if shared && len(msg.Body) >= proto.MinBodyRef {
		var q queuedRefs
		err := c.enqueue(func(dst []byte) ([]byte, error) { // runs under wmu
			from := len(c.wrefs)
			out, refs, err := proto.AppendPublishRefs(dst, c.wrefs, channel, frameMax, m, msg)
			c.wrefs = refs
			q = queuedRefs{batch: c.wbatch, from: from, to: len(refs)}
			return out, err
		}, written)
		if err != nil {
			return queuedRefs{}, err
		}
		return q, nil
	}
	return queuedRefs{}, c.enqueue(func(dst []byte) ([]byte, error) {
		return proto.AppendPublish(dst, channel, frameMax, m, msg)
	}, written)
}

// WaitPublishRoom waits until the output queue is under its limit and the
// broker has not blocked the connection (connection.blocked). It honours
// ctx: if ctx has already ended it returns ctx's error at once, so that an
// operation whose ctx has ended is never sent.
func (c *Conn) WaitPublishRoom(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.waitRoom(ctx)
}

// waitRoom waits until there is room, each time the writer drains or the
// blocked state changes: with a ctx, room to publish (under WriteLimit and
// not blocked), honouring ctx; with a nil ctx (the reader, waitBacklog),
// a queue back under backlogLimit, or the connection's end. It returns the
// connection's error once nothing more can be written.
func (c *Conn) waitRoom(ctx context.Context) error {
	var stop <-chan struct{} = c.dead
	if ctx != nil {
		stop = ctx.Done()
	}
	for {
		c.wmu.Lock()
		if c.werr != nil {
			c.wmu.Unlock()
			return c.closedErr()
		}
		queued := len(c.wbuf) + c.wrefBytes
		if (ctx != nil && queued < c.cfg.WriteLimit && !c.blocked) || (ctx == nil && int64(queued) <= c.backlogLimit()) {
			c.wmu.Unlock()
			return nil
		}
		c.roomWaiters = true
		room := c.room
		c.wmu.Unlock()
		select {
		case <-room:
		case <-stop:
			if ctx == nil {
				return c.deadErr
			}
			return ctx.Err()
		}
	}
}

// wakeRoomLocked releases everyone waiting in WaitPublishRoom. Callers hold wmu.
func (c *Conn) wakeRoomLocked() {
	if c.roomWaiters {
		close(c.room)
		c.room = make(chan struct{})
		c.roomWaiters = false
	}
}

func (c *Conn) setBlocked(blocked bool) {
	c.wmu.Lock()
	c.blocked = blocked
	c.wakeRoomLocked()
	c.wmu.Unlock()
}

// writeLoop is the writer goroutine: it writes queued output in one system
// call per batch, sends heartbeats when idle, and ends the connection when
// the peer has been silent for a heartbeat interval and a quarter to a half.
func (c *Conn) writeLoop() {
	defer c.wg.Done()
	// Ticks come four times an interval. A heartbeat goes out after two
	// ticks without output (half an interval); the peer is declared dead
	// after silentTicksDead ticks without an octet in, which is between
	// 1.25 and 1.5 intervals after its last one: within the two the spec
	// allows, as soon as amqp091-go notices, and still more than two of
	// the heartbeats RabbitMQ sends every half interval.
	//
	// A write blocked on a peer that stopped reading would keep the ticks
	// from being seen, so writes carry a deadline two intervals after the
	// last tick (at least 1.75 intervals after the write starts). It is
	// moved on ticks, not per write: moving a deadline arms a runtime
	// timer, and one armed per write woke the network poller per write
	// (an eventfd write plus a thread wake-up each time).
	var tick <-chan time.Time
	hb := c.cfg.Heartbeat
	if hb > 0 {
		t := time.NewTicker(hb / 4)
		defer t.Stop()
		tick = t.C
		c.moveWriteDeadline(2 * hb)
	}
	silentTicks, idleTicks := 0, 0
	// Liveness counts octets read, not frames: a large frame arriving
	// slowly is the peer talking (AMQP 0-9-1, 4.2.7).
	heard := c.fr.Octets()
	for {
		select {
		case <-c.wake:
		case <-tick:
			c.moveWriteDeadline(2 * hb)
			if octets := c.fr.Octets(); octets != heard || c.readerHeld.Load() {
				heard = octets
				silentTicks = 0 // heard from the peer, or not listening: held by a handler
			} else if silentTicks++; silentTicks >= silentTicksDead {
				c.fail(c.faultError(Fault{Hard: true, Local: true, Text: "peer silent for 1.25 heartbeat intervals", Cause: c.cfg.Errors.Heartbeat}))
				c.failWriteCallbacks()
				return
			}
			if idleTicks++; idleTicks >= 2 {
				c.enqueue(func(dst []byte) ([]byte, error) { return proto.AppendHeartbeat(dst), nil }, nil)
			}
		case <-c.dead:
			c.failWriteCallbacks()
			return
		}
		n, err := c.flush()
		if n > 0 {
			idleTicks = 0
		}
		if err != nil { // already the connection's error (see flush)
			c.fail(err)
			c.failWriteCallbacks()
			return
		}
	}
}

// silentTicksDead is how many quarter-interval ticks without an octet
// from the peer end the connection (see writeLoop).
const silentTicksDead = 5

// flush writes everything queued so far. A failed write is returned as
// the error that ends the connection, the one its callbacks got.
func (c *Conn) flush() (int, error) {
	c.wmu.Lock()
	buf, cbs, refs, refBytes := c.wbuf, c.wcbs, c.wrefs, c.wrefBytes
	if len(buf) == 0 && len(cbs) == 0 {
		c.wmu.Unlock()
		return 0, nil
	}
	c.wbuf, c.wcbs, c.wrefs, c.wrefBytes = c.wspare[:0], c.wspareCbs[:0], c.wspareRefs[:0], 0
	if c.backedUp.Load() {
		c.backedUp.Store(false)
	}
	c.wbatch++
	c.ackEnd = 0 // the ack it marks is about to be written
	c.wmu.Unlock()

	var err error
	if len(buf) > 0 {
		c.ioMu.Lock()
		err = c.write(buf, refs)
		c.ioMu.Unlock()
	}
	clear(refs) // let the bodies go
	if err != nil {
		err = c.faultError(Fault{Hard: true, Text: "write failed", Cause: err})
	}
	for i, cb := range cbs {
		cb(err)
		cbs[i] = nil
	}

	c.wmu.Lock()
	if cap(buf) <= c.spareBound() {
		c.wspare = buf[:0]
	} else {
		c.wspare = nil
	}
	c.wspareCbs = cbs[:0]
	if cap(refs) <= c.spareBound()/proto.MinBodyRef {
		c.wspareRefs = refs[:0]
	} else {
		c.wspareRefs = nil
	}
	c.wakeRoomLocked()
	c.wmu.Unlock()
	return len(buf) + refBytes, err
}

// write writes one batch: buf alone in one write, or with references
// spliced in. On a TCP connection that is one vectored write (writev).
// Other connections (TLS above all, where every Write is a record and a
// system call of its own) get the pieces copied into one buffer and one
// Write, as if they had never been references. It runs on the writer
// under ioMu.
func (c *Conn) write(buf []byte, refs []proto.BodyRef) error {
	if len(refs) == 0 {
		_, err := c.nc.Write(buf)
		return err
	}
	iov, at := c.wiov[:0], 0
	for _, r := range refs {
		if r.At > at {
			iov = append(iov, buf[at:r.At])
		}
		iov, at = append(iov, r.Chunk), r.At
	}
	iov = append(iov, buf[at:])
	keep := iov // WriteTo consumes its receiver; keep the backing array
	var err error
	if c.vectored {
		_, err = iov.WriteTo(c.nc)
	} else {
		flat := c.wflat[:0]
		for _, piece := range iov {
			flat = append(flat, piece...)
		}
		_, err = c.nc.Write(flat)
		if cap(flat) <= c.spareBound() {
			c.wflat = flat[:0]
		} else {
			c.wflat = nil
		}
	}
	clear(keep)
	c.wiov = keep[:0]
	return err
}

// failWriteCallbacks tells everyone still waiting for their frames to be
// written that they will not be.
func (c *Conn) failWriteCallbacks() {
	c.wmu.Lock()
	cbs := c.wcbs
	c.wcbs, c.wbuf, c.ackEnd = nil, nil, 0
	c.wrefs, c.wrefBytes = nil, 0
	c.backedUp.Store(false)
	c.wbatch++
	c.wakeRoomLocked()
	c.wmu.Unlock()
	err := c.closedErr()
	for _, cb := range cbs {
		cb(err)
	}
}

// moveWriteDeadline sets the write deadline d from now. It takes ioMu so
// that writeNow's shorter deadline stands while writeNow writes.
func (c *Conn) moveWriteDeadline(d time.Duration) {
	c.ioMu.Lock()
	c.nc.SetWriteDeadline(time.Now().Add(d))
	c.ioMu.Unlock()
}

// writeNow writes one method frame on channel 0 directly, bypassing the
// queue: a close to a peer that broke the protocol, or the close-ok the
// reader owes before the socket shuts. Its deadline is short because the
// connection is ending either way.
func (c *Conn) writeNow(m proto.Method) {
	frame, err := proto.AppendMethodFrame(nil, 0, m)
	if err != nil {
		return
	}
	c.ioMu.Lock()
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.nc.Write(frame)
	c.ioMu.Unlock()
}
