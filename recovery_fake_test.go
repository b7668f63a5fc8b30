package leveret_test

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// fdCount is the number of open file descriptors of this process.
func fdCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// heapAfterGC is the live heap after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// 100 recoveries in a row (the server hangs up on each connection when
// told to) leave no goroutine, file descriptor or memory behind: the
// counts after the 100th equal those after the 10th.
func TestRecoveryHundredDropsLeaveNothing(t *testing.T) {
	leakCheck(t)
	const drops = 100
	kick := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ForgetEnded: true}, func(c *fakeserver.Conn) {
		go func() { // owner: this test; exits when told to drop the connection, or it ends
			select {
			case <-kick:
				c.Close() // the connection drops
			case <-c.Done():
			}
		}()
		c.Serve() // answers the client's close when the test ends
	})
	recovered := make(chan struct{}, drops+1)
	c := dial(t, s,
		leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == leveret.EventRecovered {
				recovered <- struct{}{}
			}
		}))
	var goroutines10, fds10 int
	var heap10 uint64
	for i := 1; i <= drops; i++ {
		kick <- struct{}{}
		receive(t, recovered, "recovery")
		if i == 10 {
			goroutines10, fds10, heap10 = len(libGoroutines()), fdCount(t), heapAfterGC()
		}
	}
	require.Equal(t, leveret.StateConnected, c.State())
	if n := settledGoroutines(goroutines10); n > goroutines10 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines grew from %d to %d:\n%s", goroutines10, n, buf[:runtime.Stack(buf, true)])
	}
	require.LessOrEqual(t, fdCount(t), fds10, "file descriptors grew")
	require.Less(t, heapAfterGC(), heap10+1<<20, "heap grew by more than 1 MiB over 90 recoveries")
}

// settledGoroutines waits briefly for the number of goroutines running
// leveret's code (not the fake server's, whose goroutines for a dropped
// connection may still be winding down) to reach want, and returns it: a
// goroutine that was just joined may still be returning.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := len(libGoroutines())
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close while the client waits out a long reconnect delay returns at once
// and joins the supervisor; what was issued during the outage fails with
// an error wrapping ErrClosed instead of waiting for a connection.
func TestRecoveryCloseDuringReconnectWait(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) { c.Close() })
	disconnected := make(chan struct{}, 1)
	client, err := leveret.Dial(waitCtx(t), s.URL(),
		leveret.WithReconnect(&leveret.Backoff{Initial: time.Hour, Max: time.Hour}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == leveret.EventDisconnected {
				disconnected <- struct{}{}
			}
		}))
	require.NoError(t, err)
	receive(t, disconnected, "disconnect")
	require.Equal(t, leveret.StateReconnecting, client.State())
	declare := client.QueueDeclare(ops.QueueDeclare{Queue: "parked"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, client.Close(ctx))
	_, err = declare.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrClosed)
	require.ErrorIs(t, client.Err(), leveret.ErrClosed)
	require.Equal(t, leveret.StateClosed, client.State())
}

// A consumer of a stream resumes after a reconnect from the offset after
// the last delivery it handed over (RabbitMQ stamps each with
// x-stream-offset), not from the x-stream-offset the user first asked for,
// and the user's Args table is left as it was.
func TestRecoveryStreamConsumerResumesAfterLastOffset(t *testing.T) {
	leakCheck(t)
	var conns atomic.Int32
	kick := make(chan struct{})
	resumed := make(chan any, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ForgetEnded: true}, func(c *fakeserver.Conn) {
		ch, m := c.Expect(t, proto.BasicConsumeID)
		consume := m.(*proto.BasicConsume)
		c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: consume.ConsumerTag})
		if conns.Add(1) > 1 {
			resumed <- consume.Arguments["x-stream-offset"]
			c.Serve()
			return
		}
		for off := int64(10); off <= 12; off++ {
			msg := ops.Message{Headers: ops.Table{"x-stream-offset": off}, Body: []byte("m")}
			c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: consume.ConsumerTag, DeliveryTag: uint64(off - 9)}, &msg)
		}
		select {
		case <-kick:
			c.Close()
		case <-c.Done():
		}
	})
	client := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
	args := ops.Table{"x-stream-offset": "first"}
	cs, err := await(t, client.Consume(ops.Consume{Queue: "stream", Prefetch: 0, Args: args}))
	require.NoError(t, err)
	for want := int64(10); want <= 12; want++ {
		d := receive(t, cs.Deliveries(), "delivery")
		require.Equal(t, want, d.Headers["x-stream-offset"])
	}
	kick <- struct{}{}
	require.Equal(t, int64(13), receive(t, resumed, "the restarted consume"))
	require.Equal(t, ops.Table{"x-stream-offset": "first"}, args, "the user's Args were modified")
}

// A consumer that ran before the drop and is refused with 406 on the new
// connection for a moment (as RabbitMQ refuses a stream consumer on a node
// that does not know the stream's members yet) is started again and keeps
// its Deliveries channel; the recovery reports it tried again, and each
// refusal comes as an EventConsumerRefused.
func TestRecoveryConsumerRefusedForAMomentIsRetried(t *testing.T) {
	leakCheck(t)
	var conns atomic.Int32
	kick := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ForgetEnded: true}, func(c *fakeserver.Conn) {
		ch, m := c.Expect(t, proto.BasicConsumeID)
		tag := m.(*proto.BasicConsume).ConsumerTag
		if conns.Add(1) == 1 {
			c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: tag})
			select {
			case <-kick:
				c.Close()
			case <-c.Done():
			}
			return
		}
		for range 2 { // refused twice, then accepted
			c.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - does not have a replica on the local node",
				ClassID: 60, MethodID: 20})
			c.Expect(t, proto.ChannelCloseOkID)
			ch, _ = c.Expect(t, proto.BasicConsumeID)
		}
		c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: tag})
		c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: tag, DeliveryTag: 1}, &ops.Message{Body: []byte("after")})
		c.Serve()
	})
	recovered := make(chan *leveret.Recovery, 1)
	refused := make(chan error, 2)
	client := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithEventHandler(func(e leveret.Event) {
			switch e.Kind {
			case leveret.EventRecovered:
				recovered <- e.Recovery
			case leveret.EventConsumerRefused:
				refused <- e.Err
			}
		}))
	cs, err := await(t, client.Consume(ops.Consume{Queue: "q"}))
	require.NoError(t, err)
	kick <- struct{}{}
	rep := receive(t, recovered, "recovery")
	require.Len(t, rep.Failed, 1)
	require.ErrorContains(t, rep.Failed[0], "tried again")
	require.ErrorIs(t, rep.Failed[0], leveret.ErrPreconditionFailed)
	for range 2 {
		require.ErrorIs(t, receive(t, refused, "EventConsumerRefused"), leveret.ErrPreconditionFailed)
	}
	d := receive(t, cs.Deliveries(), "the delivery after the retries")
	require.Equal(t, "after", string(d.Body))
	require.NoError(t, cs.Err())
}

// dialEvents dials s with a client that reconnects after 1 ms and returns
// the events of kind it reports, in order (up to 256 unread).
func dialEvents(t *testing.T, s *fakeserver.Server, kind leveret.EventKind, opts ...leveret.Option) (*leveret.Client, <-chan leveret.Event) {
	t.Helper()
	events := make(chan leveret.Event, 256)
	c := dial(t, s, append([]leveret.Option{leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == kind {
				events <- e
			}
		})}, opts...)...)
	return c, events
}

// WithTopologyRecovery's filter chooses what a reconnect re-declares: the
// queue it lets through is declared on the new connection, the other not.
func TestRecoveryTopologyFilter(t *testing.T) {
	leakCheck(t)
	var mu sync.Mutex
	var redeclared []string
	b := &fakeserver.Broker{Before: func(n, _ int, _ uint16, m proto.Method) bool {
		if q, ok := m.(*proto.QueueDeclare); ok && n == 2 {
			mu.Lock()
			redeclared = append(redeclared, q.Queue)
			mu.Unlock()
		}
		return false
	}}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	recovered := make(chan *leveret.Recovery, 1)
	c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithTopologyRecovery(func(e any) bool {
			q, ok := e.(ops.QueueDeclare)
			return !ok || q.Queue == "keep"
		}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == leveret.EventRecovered {
				recovered <- e.Recovery
			}
		}))
	require.NoError(t, leveret.WaitAll(waitCtx(t),
		c.QueueDeclare(ops.QueueDeclare{Queue: "keep", Durable: true}),
		c.QueueDeclare(ops.QueueDeclare{Queue: "skip", Durable: true})))
	require.NoError(t, s.Conns()[0].Send(0, &proto.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"}))
	rep := receive(t, recovered, "recovery")
	require.Equal(t, 1, rep.Queues)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"keep"}, redeclared)
}
