package leveret_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Memory a peer can make the client hold (issue 27, points 4-6). Each test
// asserts the live heap after a collection, measured while the peer's
// traffic is held in the client.

const heapBound = 64 << 20

// TestHostileOwedRepliesBounded (point 4): a peer that stops reading and
// floods channel.flow and basic.cancel, each of which the client must
// answer. Before, the answers piled up in the output queue without bound
// (hundreds of MiB in seconds, forever with heartbeats off). Now the reader
// stops reading once the queue is backed up, so the peer's writes block
// (TCP backpressure) and the heap stays small; once the peer reads again,
// every answer goes out and the connection is fine.
func TestHostileOwedRepliesBounded(t *testing.T) {
	leakCheck(t)
	const flood = 4 << 20 // frames the peer tries to send
	var sent, answered atomic.Int64
	stalled := make(chan struct{})
	resume := make(chan struct{})
	allAnswered := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadBuffer: 64 << 10, ReadTimeout: 2 * time.Second},
		func(c *fakeserver.Conn) {
			ch, _ := c.Expect(t, proto.QueueDeclareID)
			c.Send(ch, &proto.QueueDeclareOk{Queue: "q"})
			c.PauseReading()
			// A consumer tag of 255 octets: each cancel-ok owed is as large as
			// the cancel that asked for it.
			tag := strings.Repeat("t", 255)
			var batch []byte
			for i := range 512 {
				if i%2 == 0 {
					batch = append(batch, fakeserver.MethodFrame(ch, &proto.ChannelFlow{Active: true})...)
				} else {
					batch = append(batch, fakeserver.MethodFrame(ch, &proto.BasicCancel{ConsumerTag: tag})...)
				}
			}
			deadline := time.Now().Add(8 * time.Second)
			for sent.Load() < flood && time.Now().Before(deadline) {
				if c.SendRaw(batch) != nil { // blocked for ReadTimeout: the client stopped reading
					break
				}
				sent.Add(512)
			}
			close(stalled)
			select {
			case <-resume:
			case <-c.Done():
				return
			}
			c.ResumeReading()
			for {
				_, m, err := c.ReadMethod()
				if errors.Is(err, fakeserver.ErrTimeout) {
					continue
				}
				if err != nil {
					return
				}
				switch m.ID() {
				case proto.ChannelFlowOkID, proto.BasicCancelOkID:
					if answered.Add(1) == sent.Load() {
						close(allAnswered)
					}
				case proto.ConnectionCloseID:
					c.Send(0, &proto.ConnectionCloseOk{})
					return
				}
			}
		})
	base := heapAfterGC()
	c := dial(t, s, leveret.WithHeartbeat(0))
	_, err := await(t, c.QueueDeclare(ops.QueueDeclare{Queue: "q"}))
	require.NoError(t, err)
	awaitDone(t, stalled, "the flood")
	held := heapAfterGC()
	t.Logf("peer sent %d frames; live heap %d KiB above the start", sent.Load(), (int64(held)-int64(base))>>10)
	require.Less(t, int64(held)-int64(base), int64(heapBound), "live heap while the peer does not read")
	require.Less(t, sent.Load(), int64(flood), "the client stopped reading the flood")
	close(resume)
	// Every frame the peer got out is answered once it reads again.
	awaitDone(t, allAnswered, "an answer to every frame sent")
	require.NoError(t, c.Err())
}

// TestHostileHeadersOnlyHoldLittle (point 5): 64 channels each get a
// content header announcing a 64 MiB body, and no body. Before, each
// header reserved 8 MiB (512 MiB in all); now what is reserved ahead of
// the bytes is bounded per connection, and bodies grow as they arrive.
func TestHostileHeadersOnlyHoldLittle(t *testing.T) {
	leakCheck(t)
	const channels, announced = 64, 64 << 20
	var opened []uint16
	sent := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: 5 * time.Second}, func(c *fakeserver.Conn) {
		for len(opened) < channels {
			opened = append(opened, c.ExpectOpen(t))
		}
		for _, ch := range opened {
			var b []byte
			b = append(b, fakeserver.MethodFrame(ch, &proto.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, RoutingKey: "q"})...)
			hdr, err := proto.AppendContentHeader(nil, ch, proto.ClassBasic, announced, &ops.Message{})
			require.NoError(t, err)
			c.SendRaw(append(b, hdr...))
		}
		// A marker the client reports only after the frames before it.
		c.Send(0, &proto.ConnectionBlocked{Reason: "marker"})
		close(sent)
		c.Serve()
	})
	marker := make(chan struct{}, 1)
	base := heapAfterGC()
	c := dial(t, s, leveret.WithBlockedHandler(func(blocked bool, _ string) {
		if blocked {
			marker <- struct{}{}
		}
	}))
	for range channels {
		_, err := c.Channel(waitCtx(t))
		require.NoError(t, err)
	}
	awaitDone(t, sent, "the headers")
	receive(t, marker, "the marker behind the headers")
	held := heapAfterGC()
	t.Logf("live heap %d KiB above the start with %d bodies of %d MiB announced", (int64(held)-int64(base))>>10, channels, announced>>20)
	require.Less(t, int64(held)-int64(base), int64(heapBound), "live heap with only headers received")
	require.NoError(t, c.Err())
}

// TestHostileHeaderMemoryCounted (point 6): deliveries whose 128 KiB
// header frames decode to megabytes (arrays of empty tables) count what
// they hold against WithConsumerMemoryLimit. Before, only the body was
// counted: 60 of them reached about 100 MiB under a 4 MiB limit, and all
// 150 of this test are read whatever the limit.
func TestHostileHeaderMemoryCounted(t *testing.T) {
	leakCheck(t)
	const deliveries = 150
	var sent atomic.Int64
	done := make(chan struct{})
	arr := make([]any, 0, 25_000)
	for range cap(arr) {
		arr = append(arr, ops.Table{})
	}
	headers := ops.Table{"a": arr}
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadBuffer: 64 << 10, ReadTimeout: 3 * time.Second},
		func(c *fakeserver.Conn) {
			ch, _ := c.Expect(t, proto.BasicConsumeID)
			c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "big"})
			for i := range deliveries {
				msg := ops.Message{Headers: headers, Body: []byte("x")}
				if c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: "big", DeliveryTag: uint64(i + 1), RoutingKey: "q"}, &msg) != nil {
					break // blocked: the client holds back
				}
				sent.Add(1)
			}
			close(done)
			c.Serve()
		})
	base := heapAfterGC()
	c := dial(t, s, leveret.WithConsumerMemoryLimit(4<<20), leveret.WithConsumerBuffer(1))
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "big", NoAck: true}))
	require.NoError(t, err)
	awaitDone(t, done, "the deliveries")
	held := heapAfterGC()
	t.Logf("server sent %d of %d; live heap %d KiB above the start", sent.Load(), deliveries, (int64(held)-int64(base))>>10)
	require.Less(t, int64(held)-int64(base), int64(heapBound), "live heap under a 4 MiB consumer limit")
	for i := range sent.Load() {
		d := receive(t, cs.Deliveries(), "a delivery")
		require.Equal(t, uint64(i+1), d.DeliveryTag)
		require.Len(t, d.Headers["a"], len(arr))
	}
	require.NoError(t, c.Err())
}
