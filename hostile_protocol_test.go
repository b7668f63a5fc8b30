package leveret_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Liveness and protocol (issue 27, points 7-9).

// TestHostileSlowLargeFrameIsAlive (point 7): with a 1 s heartbeat, a
// 24,000-byte body frame that arrives a little at a time over 4 s keeps
// the connection alive: the spec (4.2.7) counts received octets, not
// whole frames. Before, the client gave up on the "silent" peer at 2 s.
func TestHostileSlowLargeFrameIsAlive(t *testing.T) {
	leakCheck(t)
	const size, pieces = 24_000, 40
	body := bytes.Repeat([]byte("slow"), size/4)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, Heartbeat: 1}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicConsumeID)
		c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "slow"})
		var b []byte
		b = append(b, fakeserver.MethodFrame(ch, &proto.BasicDeliver{ConsumerTag: "slow", DeliveryTag: 1, RoutingKey: "q"})...)
		hdr, err := proto.AppendContentHeader(nil, ch, proto.ClassBasic, size, &ops.Message{})
		require.NoError(t, err)
		c.SendRaw(append(b, hdr...))
		frame := fakeserver.RawFrame(proto.FrameBody, ch, body)
		step := len(frame)/pieces + 1
		for len(frame) > 0 { // 40 pieces, 100 ms apart: no whole frame for 4 s
			n := min(step, len(frame))
			if c.SendRaw(frame[:n]) != nil {
				return
			}
			frame = frame[n:]
			time.Sleep(100 * time.Millisecond)
		}
		c.Serve()
	})
	c := dial(t, s, leveret.WithHeartbeat(time.Second))
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "slow", NoAck: true}))
	require.NoError(t, err)
	d := receive(t, cs.Deliveries(), "the slow delivery")
	require.NotNil(t, d, "the consumer ended: %v", c.Err())
	require.Equal(t, body, d.Body)
	require.NoError(t, c.Err(), "the connection outlived the slow frame")
}

// TestHostileHandshakeNotFollowedEndsDial (point 8): a server that asks
// for a SASL challenge round (connection.secure), which leveret does not
// support, ends Dial at once with a *ConnectionError, after the client
// told the server why (connection.close 503); it is not dialled again.
// Before, Dial redialled until its ctx ended.
func TestHostileHandshakeNotFollowedEndsDial(t *testing.T) {
	leakCheck(t)
	closes := make(chan *proto.ConnectionClose, 8)
	s := fakeserver.StartWith(t, fakeserver.Options{AfterStartOk: &proto.ConnectionSecure{Challenge: "prove it"}}, func(c *fakeserver.Conn) {
		closes <- readUntilClose(c)
	})
	base := libGoroutines()
	_, err := leveret.Dial(waitCtx(t), s.URL(), leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
	ce := requireConnErr(t, err, leveret.ReplyCode(proto.CommandInvalid))
	require.Contains(t, ce.Error(), "connection.secure")
	requireNoneStarted(t, base)
	cl := receive(t, closes, "the client's connection.close")
	require.NotNil(t, cl, "the client hung up without connection.close")
	require.Equal(t, uint16(proto.CommandInvalid), cl.ReplyCode)
	require.Len(t, s.Conns(), 1, "connections dialled")
}

// TestHostileDeliveryTagsMustIncrease (point 9): RabbitMQ numbers a
// channel's deliveries (basic.deliver and basic.get-ok alike) 1, 2, 3...;
// acks rely on it ("multiple" means every tag up to this one). A tag that
// does not increase is a protocol violation: the client closes the
// connection with 503 and says which tag. Before, it was taken, and valid
// acks on the channel then failed with ErrUnknownDeliveryTag.
func TestHostileDeliveryTagsMustIncrease(t *testing.T) {
	leakCheck(t)
	closes := make(chan *proto.ConnectionClose, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicConsumeID)
		c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "c"})
		for _, tag := range []uint64{1, 2, 2} {
			c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: "c", DeliveryTag: tag, RoutingKey: "q"}, &ops.Message{Body: []byte("m")})
		}
		closes <- readUntilClose(c)
	})
	c := dial(t, s)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "c"}))
	require.NoError(t, err)
	for _, want := range []uint64{1, 2} {
		d := receive(t, cs.Deliveries(), "a delivery")
		require.NotNil(t, d)
		require.Equal(t, want, d.DeliveryTag)
	}
	cl := receive(t, closes, "the client's connection.close")
	require.NotNil(t, cl)
	require.Equal(t, uint16(proto.CommandInvalid), cl.ReplyCode)
	require.Contains(t, cl.ReplyText, "delivery tag 2")
	awaitDone(t, c.Done(), "the client's end")
	requireConnErr(t, c.Err(), leveret.ReplyCode(proto.CommandInvalid))
}
