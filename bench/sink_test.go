package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// sink is a minimal AMQP 0-9-1 server for client-side benchmarks: it
// completes the handshake, opens and closes channels, enters confirm mode
// on request and then swallows publishes, acknowledging them (one multiple
// ack per read batch) on confirm channels. Nothing is routed or stored, so
// a benchmark against it measures the client alone.
type sink struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startSink(tb testing.TB) *sink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &sink{ln: ln}
	// Owner: the sink; exits when the listener is closed by the cleanup.
	s.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			// Owner: the sink; exits when the client closes the connection.
			s.wg.Go(func() {
				defer nc.Close()
				if err := serveSink(nc); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					tb.Logf("sink: %v", err)
				}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *sink) url() string { return "amqp://guest:guest@" + s.ln.Addr().String() + "/" }

// sinkConn is one connection's server state.
type sinkConn struct {
	nc       net.Conn
	out      []byte
	confirms map[uint16]*confirmState
	prefetch map[uint16]uint16
	feeds    map[uint16]*consumeState
}

type confirmState struct{ published, acked uint64 }

// consumeState is a consumer the sink feeds: it keeps prefetch deliveries
// unacknowledged, sending one more for each one acked, from a template
// frame whose delivery tag it patches (so the sink allocates nothing per
// delivery and a delivery benchmark counts the client's allocations).
type consumeState struct {
	prefetch    uint64
	sent, acked uint64
	frames      []byte // basic.deliver, content header, body
	tagAt       int    // offset of the delivery tag in frames
}

func serveSink(nc net.Conn) error {
	br := bufio.NewReaderSize(nc, 64<<10)
	if err := proto.ReadProtocolHeader(br); err != nil {
		return err
	}
	// NewFrameReader keeps br as it is (big enough), so br.Buffered tells
	// when a read batch is used up.
	fr := proto.NewFrameReader(br)
	c := &sinkConn{nc: nc, confirms: map[uint16]*confirmState{}, prefetch: map[uint16]uint16{}, feeds: map[uint16]*consumeState{}}
	c.send(0, &proto.ConnectionStart{VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN", Locales: "en_US",
		ServerProperties: ops.Table{"product": "sink", "version": "0", "capabilities": ops.Table{
			"publisher_confirms": true, "basic.nack": true, "consumer_cancel_notify": true,
			"connection.blocked": true, "exchange_exchange_bindings": true, "authentication_failure_close": true}}})
	if err := c.flush(); err != nil {
		return err
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		if f.Type == proto.FrameMethod {
			done, err := c.method(f.Channel, f.Payload)
			if err != nil || done {
				c.flush()
				return err
			}
		}
		if br.Buffered() == 0 {
			c.ackBatch()
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
}

// method answers one method frame; done reports connection.close.
func (c *sinkConn) method(ch uint16, payload []byte) (done bool, err error) {
	if len(payload) >= 4 && proto.MethodID(binary.BigEndian.Uint32(payload)) == proto.BasicPublishID {
		if st := c.confirms[ch]; st != nil {
			st.published++
		}
		return false, nil // content frames follow; nothing to decode
	}
	if len(payload) >= 13 && proto.MethodID(binary.BigEndian.Uint32(payload)) == proto.BasicAckID {
		// Decoded by hand, like publish, so the sink allocates nothing per ack.
		c.acked(ch, binary.BigEndian.Uint64(payload[4:]), payload[12]&1 != 0)
		return false, nil
	}
	m, err := proto.DecodeMethod(payload)
	if err != nil {
		return true, err
	}
	switch m := m.(type) {
	case *proto.ConnectionStartOk:
		c.send(0, &proto.ConnectionTune{ChannelMax: 2047, FrameMax: 131072})
	case *proto.ConnectionOpen:
		c.send(0, &proto.ConnectionOpenOk{})
	case *proto.ConnectionClose:
		c.send(0, &proto.ConnectionCloseOk{})
		return true, nil
	case *proto.ChannelOpen:
		c.send(ch, &proto.ChannelOpenOk{})
	case *proto.ChannelClose:
		c.ackBatch()
		delete(c.confirms, ch)
		c.send(ch, &proto.ChannelCloseOk{})
	case *proto.ConfirmSelect:
		c.confirms[ch] = &confirmState{}
		c.send(ch, &proto.ConfirmSelectOk{})
	case *proto.BasicQos:
		c.prefetch[ch] = m.PrefetchCount
		c.send(ch, &proto.BasicQosOk{})
	case *proto.BasicConsume:
		c.send(ch, &proto.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
		st := newConsumeState(ch, m.ConsumerTag, uint64(max(c.prefetch[ch], 1)))
		c.feeds[ch] = st
		c.feed(st, st.prefetch)
	}
	return false, nil
}

// acked feeds a consumer as many deliveries as an ack settled.
func (c *sinkConn) acked(ch uint16, tag uint64, multiple bool) {
	if st := c.feeds[ch]; st != nil {
		n := uint64(1)
		if multiple {
			n = tag - st.acked
		}
		st.acked += n
		c.feed(st, n)
	}
}

func newConsumeState(ch uint16, tag string, prefetch uint64) *consumeState {
	msg := ops.Message{ContentType: "application/octet-stream", Body: make([]byte, bodySize)}
	frames, _ := proto.AppendMethodFrame(nil, ch, &proto.BasicDeliver{ConsumerTag: tag, Exchange: "", RoutingKey: "q"})
	tagAt := 7 + 4 + 1 + len(tag) // frame header, class and method ids, the tag's length byte and text
	frames, _ = proto.AppendContentHeader(frames, ch, proto.ClassBasic, uint64(len(msg.Body)), &msg)
	frames = proto.AppendBodyFrames(frames, ch, 131072, msg.Body)
	return &consumeState{prefetch: prefetch, frames: frames, tagAt: tagAt}
}

// feed sends n more deliveries.
func (c *sinkConn) feed(st *consumeState, n uint64) {
	for range n {
		st.sent++
		binary.BigEndian.PutUint64(st.frames[st.tagAt:], st.sent)
		c.out = append(c.out, st.frames...)
	}
}

// ackBatch confirms everything published so far, one multiple ack per channel.
func (c *sinkConn) ackBatch() {
	for ch, st := range c.confirms {
		if st.published > st.acked {
			c.send(ch, &proto.BasicAck{DeliveryTag: st.published, Multiple: st.published-st.acked > 1})
			st.acked = st.published
		}
	}
}

func (c *sinkConn) send(ch uint16, m proto.Method) {
	out, err := proto.AppendMethodFrame(c.out, ch, m)
	if err != nil {
		panic(err)
	}
	c.out = out
}

func (c *sinkConn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	return err
}
