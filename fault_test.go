package leveret_test

import (
	"context"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Protocol faults no real broker produces, played by internal/fakeserver.

// waitFor bounds every wait: generous, so that slow machines do not fail
// tests that are not about timing.
const waitFor = 10 * time.Second

// leakCheck fails t if it leaves goroutines behind; the check runs after
// every other cleanup (the client's Close, the fake server's Close).
func leakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// libFrame matches a stack frame in the root package or internal/mux (not
// in leveret_test or the fake server).
var libFrame = regexp.MustCompile(`(?m)^github\.com/leveret-mq/leveret(/internal/mux)?\.`)

// libGoroutines returns the ids of goroutines running leveret's code.
func libGoroutines() map[string]string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	ids := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		if f := strings.Fields(g); len(f) > 1 && libFrame.MatchString(g) {
			ids[f[1]] = g
		}
	}
	return ids
}

// requireNoneStarted fails t if a goroutine running leveret's code, other
// than those in base, exists now. Unlike goleak it does not wait: right
// after a failed Dial it checks that none was started, or all were gone
// before Dial returned. (It cannot check Close: a joined goroutine may
// still be returning from the function that called WaitGroup.Done.)
func requireNoneStarted(t *testing.T, base map[string]string) {
	t.Helper()
	for id, stack := range libGoroutines() {
		_, old := base[id]
		require.True(t, old, "a goroutine runs leveret code after Dial returned:\n%s", stack)
	}
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// dial connects to s; the client is closed at cleanup, before s. The
// faults here end the connection for good: the client does not reconnect.
func dial(t *testing.T, s *fakeserver.Server, opts ...leveret.Option) *leveret.Client {
	t.Helper()
	c, err := leveret.Dial(waitCtx(t), s.URL(), append([]leveret.Option{leveret.WithReconnect(nil)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { closeClient(t, c) })
	return c
}

// closeClient closes c and fails t if Close does not return in time.
func closeClient(t *testing.T, c *leveret.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	require.Less(t, time.Since(start), waitFor, "Client.Close did not return")
	return err
}

// await waits for p and fails t if it does not settle in time.
func await[T any](t *testing.T, p *leveret.Promise[T]) (T, error) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(waitFor):
		t.Fatalf("promise not settled within %v", waitFor)
	}
	return p.Wait(context.Background())
}

func awaitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatalf("%s not done within %v", what, waitFor)
	}
}

func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitFor):
		t.Fatalf("fake server: no %s within %v", what, waitFor)
		panic("unreachable")
	}
}

// requireConnErr checks that err is a *leveret.ConnectionError with code.
func requireConnErr(t *testing.T, err error, code leveret.ReplyCode) *leveret.ConnectionError {
	t.Helper()
	var ce *leveret.ConnectionError
	require.ErrorAs(t, err, &ce, "want a *ConnectionError %d, got %v", code, err)
	require.Equal(t, code, ce.Code, "reply code of %v", err)
	return ce
}

// readDeclares reads methods until n queue.declares have arrived (channel
// opens are answered by AutoOpen) and returns the channel of the first.
func readDeclares(t *testing.T, c *fakeserver.Conn, n int) uint16 {
	t.Helper()
	var first uint16
	for seen := 0; seen < n; {
		ch, m, err := c.ReadMethod()
		if err != nil {
			t.Fatalf("fake server: waiting for queue.declare: %v", err)
		}
		if m.ID() == proto.QueueDeclareID {
			if seen == 0 {
				first = ch
			}
			seen++
		}
	}
	return first
}

// readUntilClose reads until the client sends connection.close and
// returns it, or nil if the client hung up first.
func readUntilClose(c *fakeserver.Conn) *proto.ConnectionClose {
	for {
		_, m, err := c.ReadMethod()
		if err != nil {
			return nil
		}
		if cl, ok := m.(*proto.ConnectionClose); ok {
			return cl
		}
	}
}

// TestFaultOutOfOrderReplies: replies are matched to the oldest pending
// request expecting that reply type, so replies to pipelined requests of
// different types may come in any order.
func TestFaultOutOfOrderReplies(t *testing.T) {
	leakCheck(t)
	sent := make(chan []proto.Method, 1)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		ch := c.ExpectOpen(t)
		_, q := c.Expect(t, proto.QueueDeclareID)
		_, x := c.Expect(t, proto.ExchangeDeclareID)
		_, b := c.Expect(t, proto.QueueBindID)
		sent <- []proto.Method{q, x, b}
		c.Send(ch, &proto.ExchangeDeclareOk{})
		c.Send(ch, &proto.QueueBindOk{})
		c.Send(ch, &proto.QueueDeclareOk{Queue: "q", MessageCount: 7, ConsumerCount: 2})
		c.Serve()
	})
	client := dial(t, s)
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	q := ch.QueueDeclare(ops.QueueDeclare{Queue: "q", Durable: true})
	x := ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "x", Kind: ops.Topic})
	b := ch.QueueBind(ops.QueueBind{Queue: "q", Exchange: "x", RoutingKey: "k"})

	got := receive(t, sent, "requests")
	require.Equal(t, &proto.QueueDeclare{Queue: "q", Durable: true}, got[0])
	require.Equal(t, &proto.ExchangeDeclare{Exchange: "x", Type: "topic"}, got[1])
	require.Equal(t, &proto.QueueBind{Queue: "q", Exchange: "x", RoutingKey: "k"}, got[2])

	qv, err := await(t, q)
	require.NoError(t, err)
	require.Equal(t, ops.QueueDeclareOk{Queue: "q", MessageCount: 7, ConsumerCount: 2}, qv)
	_, err = await(t, x)
	require.NoError(t, err)
	_, err = await(t, b)
	require.NoError(t, err)
	require.NoError(t, ch.Err())
	require.NoError(t, client.Err())
	require.NoError(t, closeClient(t, client))
}

// TestFaultMalformedFrames: whatever the broker sends, the client neither
// panics nor hangs: the connection ends with a *ConnectionError carrying
// the right reply code, which it also sends to the broker in
// connection.close; every pending operation fails with that error.
func TestFaultMalformedFrames(t *testing.T) {
	deliver := func(ch uint16, size uint64) []byte {
		b := fakeserver.MethodFrame(ch, &proto.BasicDeliver{ConsumerTag: "ct", DeliveryTag: 1, RoutingKey: "k"})
		b, err := proto.AppendContentHeader(b, ch, proto.ClassBasic, size, &ops.Message{})
		if err != nil {
			panic(err)
		}
		return b
	}
	tests := []struct {
		name  string
		bytes func(ch uint16) []byte // what the broker sends; ch is the explicit channel
		code  leveret.ReplyCode
		is    error
	}{
		{"bad frame-end octet", func(ch uint16) []byte {
			b := fakeserver.MethodFrame(ch, &proto.QueueDeclareOk{Queue: "q"})
			b[len(b)-1] = 0x00
			return b
		}, 501, leveret.ErrFrameError},
		{"frame larger than frame_max", func(ch uint16) []byte {
			// Only the header: the size must be refused before the payload is read.
			return []byte{proto.FrameMethod, byte(ch >> 8), byte(ch), 0x00, 0x10, 0x00, 0x00}
		}, 501, leveret.ErrFrameError},
		{"unknown frame type", func(uint16) []byte {
			return fakeserver.RawFrame(5, 0, nil)
		}, 501, leveret.ErrFrameError},
		{"truncated method arguments", func(ch uint16) []byte {
			// queue.declare-ok with its queue name but no counts.
			return fakeserver.RawFrame(proto.FrameMethod, ch, []byte{0, 50, 0, 11, 1, 'q'})
		}, 501, leveret.ErrFrameError},
		{"heartbeat on a channel", func(ch uint16) []byte {
			return fakeserver.RawFrame(proto.FrameHeartbeat, ch, nil)
		}, 501, leveret.ErrFrameError},
		{"body longer than its header said", func(ch uint16) []byte {
			return append(deliver(ch, 5), fakeserver.RawFrame(proto.FrameBody, ch, []byte("0123456789"))...)
		}, 501, leveret.ErrFrameError},
		{"content header without a method", func(ch uint16) []byte {
			b, _ := proto.AppendContentHeader(nil, ch, proto.ClassBasic, 0, &ops.Message{})
			return b
		}, 505, leveret.ErrUnexpectedFrame},
		{"method inside content", func(ch uint16) []byte {
			return append(deliver(ch, 5), fakeserver.MethodFrame(ch, &proto.QueueDeclareOk{Queue: "q"})...)
		}, 505, leveret.ErrUnexpectedFrame},
		{"reply nobody asked for", func(ch uint16) []byte {
			return fakeserver.MethodFrame(ch, &proto.ExchangeDeclareOk{})
		}, 503, leveret.ErrCommandInvalid},
		{"unexpected method on channel 0", func(uint16) []byte {
			return fakeserver.MethodFrame(0, &proto.ConnectionTune{ChannelMax: 1})
		}, 503, leveret.ErrCommandInvalid},
		{"method on an unopened channel", func(uint16) []byte {
			return fakeserver.MethodFrame(777, &proto.QueueDeclareOk{Queue: "q"})
		}, 504, leveret.ErrChannelError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			closed := make(chan *proto.ConnectionClose, 1)
			s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
				ch := readDeclares(t, c, 2) // one on the explicit channel, one on the pool's
				c.SendRaw(tc.bytes(ch))
				closed <- readUntilClose(c)
			})
			client := dial(t, s)
			ch, err := client.Channel(waitCtx(t))
			require.NoError(t, err)
			onChannel := ch.QueueDeclare(ops.QueueDeclare{Queue: "a"})
			onPool := client.QueueDeclare(ops.QueueDeclare{Queue: "b"})

			_, err = await(t, onChannel)
			ce := requireConnErr(t, err, tc.code)
			require.ErrorIs(t, err, tc.is)
			_, err = await(t, onPool)
			requireConnErr(t, err, tc.code)

			awaitDone(t, client.Done(), "client")
			require.Equal(t, ce, client.Err(), "the client's error is the one the promises got")
			awaitDone(t, ch.Done(), "channel")
			requireConnErr(t, ch.Err(), tc.code)

			cl := receive(t, closed, "connection.close")
			require.NotNil(t, cl, "the client hung up without connection.close")
			require.Equal(t, uint16(tc.code), cl.ReplyCode)

			// Operations issued afterwards fail at once with the same error.
			_, err = await(t, ch.QueueDeclare(ops.QueueDeclare{Queue: "late"}))
			requireConnErr(t, err, tc.code)
			_, err = await(t, client.QueueDeclare(ops.QueueDeclare{Queue: "late"}))
			requireConnErr(t, err, tc.code)
			require.NoError(t, closeClient(t, client))
		})
	}
}

// TestFaultSilentPeer: a broker that negotiates a 1 s heartbeat and then
// sends nothing, with the socket open, is detected within a few seconds.
func TestFaultSilentPeer(t *testing.T) {
	leakCheck(t)
	conns := make(chan *fakeserver.Conn, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{Heartbeat: 1}, func(c *fakeserver.Conn) {
		conns <- c
		<-c.Done() // read (and count) whatever comes; answer nothing
	})
	start := time.Now()
	client := dial(t, s)
	pending := client.QueueDeclare(ops.QueueDeclare{Queue: "q"})

	awaitDone(t, client.Done(), "client")
	t.Logf("silent peer detected after %v", time.Since(start))
	err := client.Err()
	require.ErrorIs(t, err, leveret.ErrHeartbeatTimeout)
	var ce *leveret.ConnectionError
	require.ErrorAs(t, err, &ce)
	_, err = await(t, pending)
	require.ErrorIs(t, err, leveret.ErrHeartbeatTimeout)
	require.Positive(t, receive(t, conns, "connection").Heartbeats(), "the client sent no heartbeats")
	require.NoError(t, closeClient(t, client))
}

// TestFaultHeartbeatsKeepAlive: a broker that only sends heartbeats keeps
// an idle connection alive, and the client sends heartbeats too.
func TestFaultHeartbeatsKeepAlive(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{Heartbeat: 1, KeepAlive: true}, nil)
	client := dial(t, s)
	select {
	case <-client.Done():
		t.Fatalf("connection ended while the broker sent heartbeats: %v", client.Err())
	case <-time.After(3 * time.Second):
	}
	require.NoError(t, client.Err())
	ch, err := client.Channel(waitCtx(t)) // still usable
	require.NoError(t, err)
	require.NoError(t, ch.Close(waitCtx(t)))
	require.Positive(t, s.Conns()[0].Heartbeats(), "the client sent no heartbeats")
	require.NoError(t, closeClient(t, client))
}

// TestFaultBrokerClosesConnection: connection.close from the broker is
// answered with close-ok and fails everything pending with its code.
func TestFaultBrokerClosesConnection(t *testing.T) {
	leakCheck(t)
	closeOk := make(chan proto.MethodID, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		readDeclares(t, c, 2)
		c.Send(0, &proto.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"})
		_, m := c.Expect(t, proto.ConnectionCloseOkID)
		closeOk <- m.ID()
	})
	client := dial(t, s)
	ch, err := client.Channel(waitCtx(t))
	require.NoError(t, err)
	onChannel := ch.QueueDeclare(ops.QueueDeclare{Queue: "a"})
	onPool := client.QueueDeclare(ops.QueueDeclare{Queue: "b"})

	for _, p := range []*leveret.Promise[ops.QueueDeclareOk]{onChannel, onPool} {
		_, err := await(t, p)
		ce := requireConnErr(t, err, 320)
		require.ErrorIs(t, err, leveret.ErrConnectionForced)
		require.Contains(t, ce.Text, "CONNECTION_FORCED")
	}
	require.Equal(t, proto.ConnectionCloseOkID, receive(t, closeOk, "connection.close-ok"))
	awaitDone(t, client.Done(), "client")
	require.ErrorIs(t, client.Err(), leveret.ErrConnectionForced)
	require.ErrorIs(t, ch.Err(), leveret.ErrConnectionForced)
	_, err = client.Channel(waitCtx(t))
	require.ErrorIs(t, err, leveret.ErrConnectionForced)
	require.NoError(t, closeClient(t, client))
}

// TestFaultChannelClosePipelined: the broker closes an explicit channel
// because of the second of three pipelined requests. The first succeeded,
// the second gets the *ChannelError, the third was discarded by the broker
// and gets ErrNotExecuted wrapping it; the client answers channel.close-ok
// and the connection carries on.
func TestFaultChannelClosePipelined(t *testing.T) {
	tests := []struct {
		name  string
		issue func(*leveret.Channel) [3]leveret.Waiter
		want  [3]proto.MethodID
	}{
		{"different methods", func(ch *leveret.Channel) [3]leveret.Waiter {
			return [3]leveret.Waiter{
				ch.QueueDeclare(ops.QueueDeclare{Queue: "q"}),
				ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "x", Kind: ops.Fanout}),
				ch.QueueBind(ops.QueueBind{Queue: "q", Exchange: "x"}),
			}
		}, [3]proto.MethodID{proto.QueueDeclareID, proto.ExchangeDeclareID, proto.QueueBindID}},
		{"same method", func(ch *leveret.Channel) [3]leveret.Waiter {
			return [3]leveret.Waiter{
				ch.QueueDeclare(ops.QueueDeclare{Queue: "q1"}),
				ch.QueueDeclare(ops.QueueDeclare{Queue: "q2", Durable: true}),
				ch.QueueDeclare(ops.QueueDeclare{Queue: "q3"}),
			}
		}, [3]proto.MethodID{proto.QueueDeclareID, proto.QueueDeclareID, proto.QueueDeclareID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			closeOk := make(chan uint16, 1)
			failed := tc.want[1]
			s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
				var ch uint16
				for _, id := range tc.want {
					ch, _ = c.Expect(t, id)
				}
				c.Send(ch, firstReply(tc.want[0]))
				c.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - inequivalent arg",
					ClassID: failed.Class(), MethodID: failed.Method()})
				got, _ := c.Expect(t, proto.ChannelCloseOkID)
				require.Equal(t, ch, got, "close-ok on the closed channel")
				closeOk <- got
				c.Serve()
			})
			client := dial(t, s)
			ch, err := client.Channel(waitCtx(t))
			require.NoError(t, err)
			ps := tc.issue(ch)
			for _, p := range ps {
				awaitDone(t, p.Done(), "promise")
			}

			require.NoError(t, ps[0].Err())

			err = ps[1].Err()
			var cerr *leveret.ChannelError
			require.ErrorAs(t, err, &cerr)
			require.Equal(t, leveret.ReplyCode(406), cerr.Code)
			require.Equal(t, failed.Class(), cerr.ClassID)
			require.Equal(t, failed.Method(), cerr.MethodID)
			require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
			require.NotErrorIs(t, err, leveret.ErrNotExecuted)

			err = ps[2].Err()
			require.ErrorIs(t, err, leveret.ErrNotExecuted)
			require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
			var wrapped *leveret.ChannelError
			require.ErrorAs(t, err, &wrapped)
			require.Equal(t, cerr, wrapped, "ErrNotExecuted wraps the channel's error")

			receive(t, closeOk, "channel.close-ok")
			awaitDone(t, ch.Done(), "channel")
			require.Equal(t, cerr, ch.Err())
			_, err = await(t, ch.QueueDeclare(ops.QueueDeclare{Queue: "late"}))
			require.ErrorIs(t, err, leveret.ErrPreconditionFailed, "a closed channel refuses new operations")

			require.NoError(t, client.Err(), "a channel error leaves the connection open")
			again, err := client.Channel(waitCtx(t))
			require.NoError(t, err)
			require.NoError(t, again.Close(waitCtx(t)))
			require.NoError(t, closeClient(t, client))
		})
	}
}

// firstReply is a successful reply to a request of type id.
func firstReply(id proto.MethodID) proto.Method {
	switch id {
	case proto.QueueDeclareID:
		return &proto.QueueDeclareOk{Queue: "q1"}
	case proto.ExchangeDeclareID:
		return &proto.ExchangeDeclareOk{}
	}
	panic("no reply for " + id.String())
}

// TestFaultPooledChannelCloseReissues: on the client's own channels, only
// the operation the broker blamed fails; the one it discarded behind it is
// re-issued on a fresh channel and succeeds.
func TestFaultPooledChannelCloseReissues(t *testing.T) {
	leakCheck(t)
	reissued := make(chan [2]uint16, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.QueueDeclareID)
		c.Expect(t, proto.QueueDeclareID)
		c.Expect(t, proto.QueueDeclareID)
		c.Send(ch, &proto.QueueDeclareOk{Queue: "q1"})
		c.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - inequivalent arg 'durable'",
			ClassID: proto.ClassQueue, MethodID: proto.QueueDeclareID.Method()})
		c.Expect(t, proto.ChannelCloseOkID)
		fresh, m := c.Expect(t, proto.QueueDeclareID)
		reissued <- [2]uint16{ch, fresh}
		c.Send(fresh, &proto.QueueDeclareOk{Queue: m.(*proto.QueueDeclare).Queue})
		c.Serve()
	})
	client := dial(t, s, leveret.WithTopologyChannels(1))
	p1 := client.QueueDeclare(ops.QueueDeclare{Queue: "q1"})
	p2 := client.QueueDeclare(ops.QueueDeclare{Queue: "q2", Durable: true})
	p3 := client.QueueDeclare(ops.QueueDeclare{Queue: "q3"})

	v, err := await(t, p1)
	require.NoError(t, err)
	require.Equal(t, "q1", v.Queue)
	_, err = await(t, p2)
	var cerr *leveret.ChannelError
	require.ErrorAs(t, err, &cerr)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
	v, err = await(t, p3)
	require.NoError(t, err)
	require.Equal(t, "q3", v.Queue)
	chans := receive(t, reissued, "re-issued declare")
	require.NotEqual(t, chans[0], chans[1], "re-issued on a fresh channel")
	require.NoError(t, closeClient(t, client))
}

// TestFaultAbandonedChannelOpen: giving up on Client.Channel (ctx ends
// before open-ok) closes the channel behind the open; the late open-ok and
// close-ok are matched, not taken for violations, and the client carries on.
func TestFaultAbandonedChannelOpen(t *testing.T) {
	leakCheck(t)
	closing := make(chan uint16, 1)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.ChannelOpenID)
		got, _ := c.Expect(t, proto.ChannelCloseID) // sent once the client gave up
		closing <- got
		c.Send(ch, &proto.ChannelOpenOk{})
		c.Send(ch, &proto.ChannelCloseOk{})
		c.Serve()
	})
	client := dial(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client.Channel(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, uint16(1), receive(t, closing, "channel.close"))
	_, err = client.Channel(waitCtx(t))
	require.NoError(t, err, "the connection survived the late replies")
	require.NoError(t, client.Err())
	require.NoError(t, closeClient(t, client))
}

// TestFaultDialAuthRefused: connection.close 403 after start-ok fails Dial
// with ErrAccessRefused, answered with close-ok, without the password in
// the error and without goroutines left behind.
func TestFaultDialAuthRefused(t *testing.T) {
	leakCheck(t)
	closeOk := make(chan proto.MethodID, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{RejectAuth: true}, func(c *fakeserver.Conn) {
		_, m := c.Expect(t, proto.ConnectionCloseOkID)
		closeOk <- m.ID()
	})
	url := strings.Replace(s.URL(), "guest:guest", "guest:s3cret-pw", 1)
	base := libGoroutines()
	client, err := leveret.Dial(waitCtx(t), url)
	requireNoneStarted(t, base)
	require.Nil(t, client)
	require.ErrorIs(t, err, leveret.ErrAccessRefused)
	requireConnErr(t, err, 403)
	require.NotContains(t, err.Error(), "s3cret-pw")
	require.Equal(t, proto.ConnectionCloseOkID, receive(t, closeOk, "connection.close-ok"))
	hs := s.Conns()[0].Handshake()
	require.Equal(t, "\x00guest\x00s3cret-pw", hs.StartOk.Response)
}

// TestFaultDialHangUpAfterStartOk: a broker without
// authentication_failure_close just hangs up on bad credentials; Dial
// reports that as ErrAccessRefused too.
func TestFaultDialHangUpAfterStartOk(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{HangUpAfterStartOk: true}, nil)
	base := libGoroutines()
	client, err := leveret.Dial(waitCtx(t), s.URL())
	requireNoneStarted(t, base)
	require.Nil(t, client)
	require.ErrorIs(t, err, leveret.ErrAccessRefused)
	requireConnErr(t, err, 403)
	require.NotContains(t, err.Error(), "guest:guest")
}
