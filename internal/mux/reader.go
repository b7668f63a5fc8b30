package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/leveret-mq/leveret/internal/proto"
)

// readLoop is the reader goroutine. It decodes every frame, answers the
// peer's close requests, and hands replies and asynchronous methods to their
// channels. It never runs user code and never waits on a user: handlers and
// completion functions must not block.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	err := c.readFrames()
	c.fail(err)
	c.failChannels(c.deadErr)
	c.readIdle()
}

func (c *Conn) readIdle() {
	if c.cfg.OnReadIdle != nil {
		c.cfg.OnReadIdle()
	}
}

func (c *Conn) readFrames() error {
	for {
		if c.fr.Buffered() == 0 {
			c.readIdle()
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			return c.readError(err)
		}
		switch f.Type {
		case proto.FrameHeartbeat:
			if f.Channel != 0 {
				return c.violation(proto.FrameError, "heartbeat on channel %d", f.Channel)
			}
		case proto.FrameMethod:
			if f.Channel == 0 {
				m, err := proto.DecodeMethod(f.Payload)
				if err != nil {
					return c.violation(proto.FrameError, "bad method frame: %v", err)
				}
				if done, err := c.handleConnectionMethod(m); done || err != nil {
					return err
				}
				continue
			}
			ch := c.channel(f.Channel)
			m, err := decodeChannelMethod(ch, f.Payload)
			if err != nil {
				return c.violation(proto.FrameError, "bad method frame: %v", err)
			}
			if ch == nil {
				if m.ID() == proto.ChannelCloseOkID {
					continue // for a channel the broker closed while we closed it too
				}
				return c.violation(proto.ChannelError, "%v on unopened channel %d", m.ID(), f.Channel)
			}
			if err := ch.handleMethod(m); err != nil {
				return err
			}
		case proto.FrameHeader, proto.FrameBody:
			ch := c.channel(f.Channel)
			if ch == nil {
				return c.violation(proto.ChannelError, "content frame on unopened channel %d", f.Channel)
			}
			if err := ch.handleContent(f.Type, f.Payload); err != nil {
				return err
			}
		default:
			return c.violation(proto.FrameError, "unknown frame type %d", f.Type)
		}
		if c.backedUp.Load() {
			if err := c.waitBacklog(); err != nil {
				return err
			}
		}
	}
}

// maxReaderBacklog is how far past WriteLimit the output queue may grow
// before the reader stops reading. Much of what the peer sends obliges an
// answer the reader queues (flow-ok, cancel-ok, close-ok, a reject for a
// delivery nobody consumes): a peer that stops reading and keeps sending
// would otherwise fill the queue without bound.
const maxReaderBacklog = 1 << 20

func (c *Conn) backlogLimit() int64 { return int64(c.cfg.WriteLimit) + maxReaderBacklog }

// waitBacklog holds the reader until the writer has drained the output
// queue below backlogLimit, or the connection ends. The peer's writes then
// back up in its socket (TCP backpressure), as ours do in it. The silence
// is ours, so the heartbeat check does not count it against the peer;
// a peer that has stopped reading for good fails the writer's deadline.
func (c *Conn) waitBacklog() (err error) {
	c.HoldReader(func() { err = c.waitRoom(nil) })
	return err
}

// decodeChannelMethod decodes a method frame for ch. basic.deliver, the
// one method that arrives per message, is decoded into the channel's own
// struct, reusing its strings: the handler sees it only during its call.
func decodeChannelMethod(ch *Channel, payload []byte) (proto.Method, error) {
	if ch != nil && len(payload) >= 4 && proto.MethodID(binary.BigEndian.Uint32(payload)) == proto.BasicDeliverID {
		if err := ch.deliver.DecodeReusing(payload[4:]); err != nil {
			return nil, err
		}
		return &ch.deliver, nil
	}
	return proto.DecodeMethod(payload)
}

// readError classifies a failed read: our own close, a malformed frame
// (answered with connection.close 501) or a lost connection.
func (c *Conn) readError(err error) error {
	select {
	case <-c.dead:
		return c.deadErr
	default:
	}
	if errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrMalformed) {
		return c.violation(proto.FrameError, "%v", err)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return c.faultError(Fault{Hard: true, Text: "read failed", Cause: err})
}

// violation tells the peer it broke the protocol and returns the error that
// ends the connection.
func (c *Conn) violation(code proto.ReplyCode, format string, args ...any) error {
	text := fmt.Sprintf(format, args...)
	c.writeNow(&proto.ConnectionClose{ReplyCode: uint16(code), ReplyText: text})
	return c.protocolFault(code, "%s", text)
}

// handleConnectionMethod handles channel 0. done reports that the
// connection has ended (the error then says how).
func (c *Conn) handleConnectionMethod(m proto.Method) (done bool, err error) {
	switch m := m.(type) {
	case *proto.ConnectionClose:
		c.writeNow(&proto.ConnectionCloseOk{}) // the reader ends next; answer before the socket closes
		c.closeMethod = proto.MethodID(uint32(m.ClassID)<<16 | uint32(m.MethodID))
		c.closeText = m.ReplyText
		return true, c.faultError(Fault{Hard: true, Code: proto.ReplyCode(m.ReplyCode), Text: m.ReplyText, Method: c.closeMethod})
	case *proto.ConnectionCloseOk:
		if !c.closing.Load() {
			// We sent no connection.close: a protocol violation, not the
			// deliberate close ErrClosed stands for.
			return true, c.violation(proto.CommandInvalid, "connection.close-ok without connection.close")
		}
		close(c.closeOk)
		return true, c.closedErrByUs
	case *proto.ConnectionUpdateSecretOk:
		if !c.secretUpdated() {
			return true, c.violation(proto.CommandInvalid, "connection.update-secret-ok without connection.update-secret")
		}
	case *proto.ConnectionBlocked:
		c.setBlocked(true)
		if c.cfg.OnBlocked != nil {
			c.cfg.OnBlocked(true, m.Reason)
		}
	case *proto.ConnectionUnblocked:
		c.setBlocked(false)
		if c.cfg.OnBlocked != nil {
			c.cfg.OnBlocked(false, "")
		}
	default:
		return true, c.violation(proto.CommandInvalid, "unexpected %v on channel 0", m.ID())
	}
	return false, nil
}

func (c *Conn) channel(id uint16) *Channel {
	c.cmu.Lock()
	ch := c.chans[id]
	c.cmu.Unlock()
	return ch
}

// failChannels ends every channel, and fails every update-secret still
// waiting, with the connection's error. It runs once,
// on the reader goroutine, after the read loop has stopped.
func (c *Conn) failChannels(err error) {
	c.cmu.Lock()
	c.chansDead = true // with the waiters taken below: no update-secret can slip in
	waiters := c.secretWaiters
	c.secretWaiters = nil
	chans := make([]*Channel, 0, len(c.chans))
	for id, ch := range c.chans {
		chans = append(chans, ch)
		delete(c.chans, id)
	}
	c.cmu.Unlock()
	for _, done := range waiters {
		done(err)
	}
	blameCandidates(chans, c.closeMethod, c.closeText)
	for _, ch := range chans {
		ch.end(err, nil)
	}
}
