package leveret_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Wire limits a hostile or broken peer could abuse, each played by the
// fake server.

// sendGetOk answers a basic.get with get-ok and a content header announcing
// size bytes, then streams body frames until the client hangs up or n
// frames are out.
func sendGetOk(c *fakeserver.Conn, ch uint16, size uint64, n int) {
	c.Send(ch, &proto.BasicGetOk{DeliveryTag: 1, RoutingKey: "q"})
	hdr, _ := proto.AppendContentHeader(nil, ch, proto.ClassBasic, size, &ops.Message{})
	if c.SendRaw(hdr) != nil {
		return
	}
	chunk := proto.AppendBodyFrames(nil, ch, 4096, bytes.Repeat([]byte("x"), 4000))
	for range n {
		if c.SendRaw(chunk) != nil {
			return
		}
	}
}

// TestLimitInboundBodySize: a content header announcing a body larger than
// any broker sends (RabbitMQ caps max_message_size at 512 MiB) ends the
// connection before anything is buffered, with a clear *ConnectionError,
// whatever the peer keeps sending.
func TestLimitInboundBodySize(t *testing.T) {
	leakCheck(t)
	closed := make(chan *proto.ConnectionClose, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicGetID)
		sendGetOk(c, ch, 1<<62, 100_000)
		closed <- readUntilClose(c)
	})
	client := dial(t, s)
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	_, err = await(t, ch.Get(ops.Get{Queue: "q"}))
	ce := requireConnErr(t, err, leveret.ReplyCode(proto.ResourceError))
	assert.Contains(t, ce.Text, "larger than any broker sends")
	cl := receive(t, closed, "connection.close")
	if cl != nil {
		assert.Equal(t, uint16(proto.ResourceError), cl.ReplyCode)
	}
	awaitDone(t, client.Done(), "client")
}

// TestLimitGetOverMaxMessageSize: a Get whose message is over
// WithMaxMessageSize fails with ErrMessageTooLarge; its body is skipped,
// the message is rejected without requeue, and the connection goes on.
func TestLimitGetOverMaxMessageSize(t *testing.T) {
	leakCheck(t)
	rejected := make(chan *proto.BasicReject, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicGetID)
		c.SendContent(ch, &proto.BasicGetOk{DeliveryTag: 1, RoutingKey: "q"}, &ops.Message{Body: bytes.Repeat([]byte("x"), 8001)})
		_, m := c.Expect(t, proto.BasicRejectID)
		rejected <- m.(*proto.BasicReject)
		c.Serve()
	})
	client := dial(t, s, leveret.WithMaxMessageSize(8000))
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	_, err = await(t, ch.Get(ops.Get{Queue: "q"}))
	require.ErrorIs(t, err, leveret.ErrMessageTooLarge)
	assert.Contains(t, err.Error(), `queue "q"`)
	r := receive(t, rejected, "basic.reject")
	assert.Equal(t, uint64(1), r.DeliveryTag)
	assert.False(t, r.Requeue)
	require.NoError(t, client.Err())
	require.NoError(t, ch.Err())
	require.NoError(t, closeClient(t, client))
}

// TestLimitInboundBodyWithinLimit: a message exactly at the limit arrives.
func TestLimitInboundBodyWithinLimit(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicGetID)
		sendGetOk(c, ch, 8000, 2)
		c.Serve()
	})
	client := dial(t, s, leveret.WithMaxMessageSize(8000))
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	g, err := await(t, ch.Get(ops.Get{Queue: "q", NoAck: true}))
	require.NoError(t, err)
	assert.Len(t, g.Delivery.Body, 8000)
	require.NoError(t, closeClient(t, client))
}

// TestLimitFrameMaxBelowMinimum: a tune with frame-max under the spec's
// 4096 is refused with a clear error; nothing is left running.
func TestLimitFrameMaxBelowMinimum(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{FrameMax: 100}, func(c *fakeserver.Conn) {})
	base := libGoroutines()
	_, err := leveret.Dial(waitCtx(t), s.URL())
	requireConnErr(t, err, leveret.ReplyCode(proto.FrameError))
	assert.Contains(t, err.Error(), "frame_max 100")
	assert.Contains(t, err.Error(), "4096")
	requireNoneStarted(t, base)
}

// TestLimitUnsolicitedCloseOk: connection.close-ok the client never asked
// for is a protocol violation, not the deliberate close ErrClosed means.
func TestLimitUnsolicitedCloseOk(t *testing.T) {
	leakCheck(t)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		c.Send(0, &proto.ConnectionCloseOk{})
		readUntilClose(c)
	})
	client := dial(t, s)
	awaitDone(t, client.Done(), "client")
	ce := requireConnErr(t, client.Err(), leveret.ReplyCode(proto.CommandInvalid))
	assert.Contains(t, ce.Text, "close-ok")
	assert.NotErrorIs(t, client.Err(), leveret.ErrClosed)
}

// TestLimitOutboundFrameMax: a method too large for the negotiated
// frame-max fails alone, locally; nothing oversized reaches the peer and
// the connection carries on.
func TestLimitOutboundFrameMax(t *testing.T) {
	leakCheck(t)
	got := make(chan string, 4)
	s := fakeserver.StartWith(t, fakeserver.Options{FrameMax: 4096, AutoOpen: true}, func(c *fakeserver.Conn) {
		for {
			ch, m, err := c.ReadMethod()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *proto.QueueDeclare:
				got <- m.Queue
				c.Send(ch, &proto.QueueDeclareOk{Queue: m.Queue})
			case *proto.ChannelClose:
				c.Send(ch, &proto.ChannelCloseOk{})
			case *proto.ConnectionClose:
				c.Send(0, &proto.ConnectionCloseOk{})
				return
			}
		}
	})
	client := dial(t, s)
	require.Equal(t, uint32(4096), client.FrameMax())
	big := ops.Table{"x-big": strings.Repeat("a", 6000)}
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	for _, p := range []*leveret.Promise[ops.QueueDeclareOk]{
		client.QueueDeclare(ops.QueueDeclare{Queue: "big-client", Args: big}),
		ch.QueueDeclare(ops.QueueDeclare{Queue: "big-channel", Args: big}),
	} {
		_, err := await(t, p)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "frame_max 4096")
		assert.Contains(t, err.Error(), "queue.declare")
	}
	// The same operations fit without the arguments.
	_, err = await(t, client.QueueDeclare(ops.QueueDeclare{Queue: "small-client"}))
	require.NoError(t, err)
	_, err = await(t, ch.QueueDeclare(ops.QueueDeclare{Queue: "small-channel"}))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"small-client", "small-channel"}, []string{<-got, <-got}, "nothing oversized was sent")
	require.NoError(t, ch.Err())
	require.NoError(t, closeClient(t, client))
}

// TestLimitNotAnAMQPServer: a server that answers in another protocol is
// named as such.
func TestLimitNotAnAMQPServer(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	go func() { // owner: this test; exits after one connection.
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		buf := make([]byte, 8)
		nc.Read(buf)
		nc.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
	}()
	_, err = leveret.Dial(waitCtx(t), "amqp://guest:guest@"+ln.Addr().String()+"/")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not an AMQP 0-9-1 server")
	assert.Contains(t, err.Error(), "HTTP/1.")
	<-done
}

// TestLimitErrorsSayWhatClosed: errors after a close wrap ErrClosed and say
// which object this side closed (after the operation they failed); a write
// failure is described once.
func TestLimitErrorsSayWhatClosed(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) { c.Serve() })
	client := dial(t, s)
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	require.NoError(t, ch.Close(waitCtx(t)))
	_, err = await(t, ch.QueueDeclare(ops.QueueDeclare{Queue: "q"}))
	require.ErrorIs(t, err, leveret.ErrClosed)
	assert.Regexp(t, `^queue\.declare "q": amqp: channel \d+ closed by this client`, err.Error())
	require.NoError(t, closeClient(t, client))
	_, err = await(t, client.QueueDeclare(ops.QueueDeclare{Queue: "q"}))
	require.ErrorIs(t, err, leveret.ErrClosed)
	assert.Equal(t, `queue.declare "q": amqp: connection closed by this client (Close)`, err.Error())
	assert.ErrorIs(t, client.Err(), leveret.ErrClosed)
}

// TestChainedPublishHonoursCtx: a Client.Publish that waits for an
// operation on another of the client's channels (here, a delete of its
// exchange, which all go to one channel) is not sent if its ctx ends before
// that operation completes.
func TestChainedPublishHonoursCtx(t *testing.T) {
	leakCheck(t)
	deletes := make(chan string, 1)
	release := make(chan struct{})
	published := make(chan string, 16)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		count := map[uint16]uint64{}
		for {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			if f.Type != proto.FrameMethod {
				continue // content of a publish
			}
			m, err := proto.DecodeMethod(f.Payload)
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *proto.ChannelOpen:
				c.Send(f.Channel, &proto.ChannelOpenOk{})
			case *proto.ConfirmSelect:
				c.Send(f.Channel, &proto.ConfirmSelectOk{})
			case *proto.ExchangeDelete:
				deletes <- m.Exchange
				<-release
				c.Send(f.Channel, &proto.ExchangeDeleteOk{})
			case *proto.BasicPublish:
				published <- m.Exchange
				count[f.Channel]++
				c.Send(f.Channel, &proto.BasicAck{DeliveryTag: count[f.Channel]})
			case *proto.ConnectionClose:
				c.Send(0, &proto.ConnectionCloseOk{})
				return
			}
		}
	})
	client := dial(t, s, leveret.WithTopologyChannels(64))
	for attempt := range 20 {
		x := fmt.Sprintf("x%d", attempt)
		deleted := client.ExchangeDelete(ops.ExchangeDelete{Exchange: x})
		require.Equal(t, x, receive(t, deletes, "exchange.delete"))
		ctx, cancel := context.WithCancel(context.Background())
		pub := client.Publish(ctx, ops.Publish{Exchange: x, Message: ops.Message{Body: []byte("late")}})
		select {
		case got := <-published: // x hashed to the deletes' own channel: it went out at once
			require.Equal(t, x, got)
			cancel()
			release <- struct{}{}
			_, err := await(t, deleted)
			require.NoError(t, err)
			continue
		case <-time.After(50 * time.Millisecond):
		}
		cancel()
		release <- struct{}{}
		_, err := await(t, deleted)
		require.NoError(t, err)
		_, err = await(t, pub)
		require.ErrorIs(t, err, context.Canceled)
		select {
		case got := <-published:
			t.Fatalf("the publish to %s was sent after its ctx ended", got)
		case <-time.After(50 * time.Millisecond):
		}
		require.NoError(t, closeClient(t, client))
		return
	}
	t.Fatal("every exchange hashed to the deletes' channel")
}

// TestConsumerMemoryLimitBackpressure: a NoAck consumer that stops reading
// makes the client stop reading the socket once its waiting deliveries pass
// the memory limit (the server's writes then block: TCP backpressure), the
// pause is not taken for a silent peer by the heartbeat check, and once the
// consumer reads again every delivery arrives, in order.
func TestConsumerMemoryLimitBackpressure(t *testing.T) {
	leakCheck(t)
	const total, size = 20_000, 1000
	var sent atomic.Int64
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, Heartbeat: 1, KeepAlive: true, ReadTimeout: 30 * time.Second},
		func(c *fakeserver.Conn) {
			ch, _ := c.Expect(t, proto.BasicConsumeID)
			c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "slow"})
			body := bytes.Repeat([]byte("b"), size)
			for i := range total {
				msg := ops.Message{MessageID: fmt.Sprint(i), Body: body}
				if c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: "slow", DeliveryTag: uint64(i + 1), RoutingKey: "q"}, &msg) != nil {
					return
				}
				sent.Add(1)
			}
			c.Serve()
		})
	client := dial(t, s, leveret.WithConsumerMemoryLimit(64<<10), leveret.WithConsumerBuffer(1))
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "slow", NoAck: true}))
	require.NoError(t, err)

	time.Sleep(3 * time.Second) // the consumer's loop is busy; three heartbeat intervals pass
	require.NoError(t, client.Err(), "no heartbeat timeout while the client held back")
	held := sent.Load()
	t.Logf("the server got %d of %d deliveries out while the consumer did not read", held, total)
	require.Less(t, held, int64(total), "the client stopped reading the socket")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range total {
		select {
		case d := <-cs.Deliveries():
			require.Equal(t, fmt.Sprint(i), d.MessageID)
		case <-ctx.Done():
			t.Fatalf("delivery %d did not arrive", i)
		}
	}
	require.NoError(t, client.Err())
	require.NoError(t, closeClient(t, client))
}

// TestIsolationEndsWithTheConnection: publishes being re-sent one at a
// time after an unattributed publish failure all settle, with
// ErrNotConfirmed, when the connection drops in the middle: none is left
// waiting forever in the isolation queue.
func TestIsolationEndsWithTheConnection(t *testing.T) {
	leakCheck(t)
	readPublishes := func(c *fakeserver.Conn, n int) (uint16, bool) {
		var ch uint16
		for seen := 0; seen < n; {
			f, err := c.ReadFrame()
			if err != nil {
				return 0, false
			}
			if f.Type != proto.FrameMethod {
				continue
			}
			m, err := proto.DecodeMethod(f.Payload)
			if err != nil {
				return 0, false
			}
			switch m.(type) {
			case *proto.ChannelOpen:
				c.Send(f.Channel, &proto.ChannelOpenOk{})
			case *proto.ConfirmSelect:
				c.Send(f.Channel, &proto.ConfirmSelectOk{})
			case *proto.BasicPublish:
				ch = f.Channel
				seen++
			}
		}
		return ch, true
	}
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		ch, ok := readPublishes(c, 3)
		if !ok {
			return
		}
		c.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - user_id property set to 'x' but authenticated user was 'guest'",
			ClassID: proto.ClassBasic, MethodID: proto.BasicPublishID.Method()})
		if _, ok := readPublishes(c, 1); ok { // the first suspect, alone on the isolation channel
			c.Close()
		}
	})
	client := dial(t, s, leveret.WithTopologyChannels(1))
	var ps []*leveret.Promise[struct{}]
	for i := range 3 {
		ps = append(ps, client.Publish(waitCtx(t), ops.Publish{RoutingKey: "q", Message: ops.Message{Body: []byte{byte(i)}}}))
	}
	for i, p := range ps {
		_, err := await(t, p)
		require.ErrorIs(t, err, leveret.ErrNotConfirmed, "publish %d", i)
	}
}

// TestLimitDeliveryOverMaxMessageSize (issue 23, §1): a delivery over
// WithMaxMessageSize between small ones is rejected without requeue (a
// dead-letter exchange gets it) and reported in EventMessageRefused with
// the queue, size and limit; the messages around it are each delivered
// once, and the connection and the consumer go on. Before, the connection
// ended (506) and, reconnecting, the same message came back for ever.
func TestLimitDeliveryOverMaxMessageSize(t *testing.T) {
	leakCheck(t)
	rejected := make(chan *proto.BasicReject, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicConsumeID)
		c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "c"})
		for i, size := range []int{10, 10, 8001, 10} {
			c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: "c", DeliveryTag: uint64(i + 1), RoutingKey: "q"},
				&ops.Message{MessageID: fmt.Sprint(i + 1), Body: bytes.Repeat([]byte("x"), size)})
		}
		for {
			_, m, err := c.ReadMethod()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *proto.BasicReject:
				rejected <- m
			case *proto.ConnectionClose:
				c.Send(0, &proto.ConnectionCloseOk{})
				return
			}
		}
	})
	refused := make(chan leveret.Event, 1)
	client := dial(t, s, leveret.WithMaxMessageSize(8000), leveret.WithEventHandler(func(e leveret.Event) {
		if e.Kind == leveret.EventMessageRefused {
			refused <- e
		}
	}))
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "c"}))
	require.NoError(t, err)
	for _, want := range []string{"1", "2", "4"} {
		d := receive(t, cs.Deliveries(), "a delivery")
		require.NotNil(t, d, "the consumer ended: %v", cs.Err())
		require.Equal(t, want, d.MessageID)
		_, err := await(t, d.Ack())
		require.NoError(t, err)
	}
	r := receive(t, rejected, "basic.reject")
	assert.Equal(t, uint64(3), r.DeliveryTag)
	assert.False(t, r.Requeue)
	e := receive(t, refused, "EventMessageRefused")
	require.ErrorIs(t, e.Err, leveret.ErrMessageTooLarge)
	for _, s := range []string{`queue "q"`, "8001 bytes", "limit of 8000 bytes"} {
		assert.Contains(t, e.Err.Error(), s)
	}
	require.NoError(t, cs.Err())
	require.NoError(t, client.Err())
}
