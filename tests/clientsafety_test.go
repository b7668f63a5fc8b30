package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// The client level is the safe level: nothing it reports as done was
// discarded by the broker, and one failing operation affects no other.

// drainBodies consumes q until it has seen every body in want at least
// once (failing on ctx's end), and returns how many duplicates it saw.
func drainBodies(t *testing.T, c *leveret.Client, q string, want map[string]bool) (dups int) {
	t.Helper()
	ctx := msgCtx(t)
	cs := msgConsume(t, c, ops.Consume{Queue: q, NoAck: true})
	seen := make(map[string]int, len(want))
	missing := len(want)
	for missing > 0 {
		d := msgNext(t, ctx, cs)
		b := string(d.Body)
		require.True(t, want[b], "unexpected message %q in %s", b, q)
		if seen[b]++; seen[b] == 1 {
			missing--
		} else {
			dups++
		}
	}
	msgOK(t, ctx, cs.Cancel(), "cancel")
	for d := range cs.Deliveries() { // what was in flight behind the cancel
		if seen[string(d.Body)]++; seen[string(d.Body)] > 1 {
			dups++
		}
	}
	return dups
}

// TestClientPublishNoSilentLoss: publishes to missing exchanges in the
// middle of a stream fail alone, with their own 404; every other publish
// is confirmed and arrives. Reproduces the silent loss on one pool channel
// (all publishes share it) and on the default 32.
func TestClientPublishNoSilentLoss(t *testing.T) {
	for _, n := range []int{1, 32} {
		t.Run(fmt.Sprintf("channels=%d", n), func(t *testing.T) {
			ctx := msgCtx(t)
			c := msgDial(t, leveret.WithTopologyChannels(n))
			queues := []string{msgQueue(t, c), msgQueue(t, c), msgQueue(t, c), msgQueue(t, c)}
			want := make([]map[string]bool, len(queues))
			for i := range want {
				want[i] = map[string]bool{}
			}
			type pub struct {
				p       *leveret.Promise[struct{}]
				missing string // exchange that does not exist, or ""
			}
			var pubs []pub
			for i := range 64 {
				if i%16 == 5 {
					x := msgName(t, fmt.Sprintf("missing%d", i))
					pubs = append(pubs, pub{c.Publish(ctx, ops.Publish{Exchange: x, Message: ops.Message{Body: []byte("lost")}}), x})
				}
				q := i % len(queues)
				body := fmt.Sprintf("m%d", i)
				want[q][body] = true
				pubs = append(pubs, pub{p: c.Publish(ctx, ops.Publish{RoutingKey: queues[q], Message: ops.Message{Body: []byte(body)}})})
			}
			for i, p := range pubs {
				_, err := p.p.Wait(ctx)
				if p.missing == "" {
					assert.NoError(t, err, "publish %d", i)
					continue
				}
				var ce *leveret.ChannelError
				if assert.ErrorAs(t, err, &ce, "publish %d to %s", i, p.missing) {
					assert.Equal(t, leveret.ReplyCode(404), ce.Code)
					assert.Equal(t, "basic.publish", ce.Method())
					assert.Contains(t, ce.Text, p.missing, "the error names this publish's own exchange")
				}
				assert.NotErrorIs(t, err, leveret.ErrNotExecuted)
			}
			dups := 0
			for i, q := range queues {
				dups += drainBodies(t, c, q, want[i])
			}
			// Publishes ahead of a failing one were routed before it and are not
			// re-sent; those behind it were discarded, so re-sending them
			// duplicates nothing.
			assert.Zero(t, dups, "duplicates")
			assert.NoError(t, c.Err())
		})
	}
}

// durableQueue declares a durable queue for a test to declare again with
// other properties (406 PRECONDITION_FAILED) and deletes it at the end.
func durableQueue(t *testing.T, c *leveret.Client) string {
	t.Helper()
	d := msgName(t, "durable")
	msgCleanup(t, []string{d}, nil)
	msgOK(t, msgCtx(t), c.QueueDeclare(ops.QueueDeclare{Queue: d, Durable: true}), "declare durable")
	return d
}

// TestClientPublishAroundFailedDeclare: a declare that fails on the
// channel carrying unconfirmed publishes fails alone; the publishes ahead of
// it were routed and those behind it were discarded, so each arrives once.
func TestClientPublishAroundFailedDeclare(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t, leveret.WithTopologyChannels(1))
	q := msgQueue(t, c)
	d := durableQueue(t, c) // declaring it again as not durable fails with 406
	want := map[string]bool{}
	var pubs []*leveret.Promise[struct{}]
	publish := func(prefix string, n int) {
		for i := range n {
			body := fmt.Sprintf("%s%d", prefix, i)
			want[body] = true
			pubs = append(pubs, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte(body)}}))
		}
	}
	publish("ahead", 200)
	failed := c.QueueDeclare(ops.QueueDeclare{Queue: d}) // 406: inequivalent durable
	publish("behind", 200)
	_, err := failed.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
	for i, p := range pubs {
		msgOK(t, ctx, p, fmt.Sprintf("publish %d", i))
	}
	assert.Zero(t, drainBodies(t, c, q, want), "duplicates")
}

// TestClientPublishResentBehindDeclare: a publish issued behind the
// declare and bind of its exchange, all discarded because a publish to that
// (then missing) exchange closed the channel, is re-sent behind them and
// arrives; only the publish that was issued before the declare fails.
func TestClientPublishResentBehindDeclare(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t, leveret.WithTopologyChannels(1))
	q := msgQueue(t, c)
	x := msgName(t, "late")
	msgCleanup(t, nil, []string{x})
	early := c.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "k", Message: ops.Message{Body: []byte("early")}})
	declared := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: x, Kind: ops.Direct})
	bound := c.QueueBind(ops.QueueBind{Queue: q, Exchange: x, RoutingKey: "k"})
	late := c.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "k", Message: ops.Message{Body: []byte("late")}})

	_, err := early.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNotFound, "issued before the declare")
	msgOK(t, ctx, declared, "declare (re-issued)")
	msgOK(t, ctx, bound, "bind (re-issued)")
	msgOK(t, ctx, late, "publish behind the declare (re-sent behind it)")
	d := msgGet(t, c, q, true)
	assert.Equal(t, "late", string(d.Body))
	assert.Equal(t, uint32(0), msgDepth(t, c, q))
}

// TestClientPublishIsolatesUnnamedFailure: a publish the broker refuses
// with an error that names no exchange (406 for a user_id that is not the
// connection's user) fails alone: the suspects are re-sent one at a time.
func TestClientPublishIsolatesUnnamedFailure(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t, leveret.WithTopologyChannels(1))
	q := msgQueue(t, c)
	want := map[string]bool{}
	var good []*leveret.Promise[struct{}]
	var bad *leveret.Promise[struct{}]
	for i := range 40 {
		if i == 17 {
			bad = c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{UserID: "not-the-user", Body: []byte("bad")}})
		}
		body := fmt.Sprintf("m%d", i)
		want[body] = true
		good = append(good, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte(body)}}))
	}
	_, err := bad.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
	assert.Contains(t, err.Error(), "not-the-user")
	for i, p := range good {
		msgOK(t, ctx, p, fmt.Sprintf("publish %d", i))
	}
	dups := drainBodies(t, c, q, want)
	t.Logf("40 publishes, 0 lost, %d duplicates", dups)
}

// TestClientPublishWaitsForIsolatedSuspects: publishes issued while the
// ones in front of them on their queue are being re-sent one at a time
// (suspects of a failure that named no exchange) go out after them, not
// ahead on a fresh channel: the queue holds the messages in issue order.
func TestClientPublishWaitsForIsolatedSuspects(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t, leveret.WithTopologyChannels(1))
	q := msgQueue(t, c)
	bad := c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{UserID: "not-the-user", Body: []byte("bad")}})
	var good []*leveret.Promise[struct{}]
	for i := range 30 {
		good = append(good, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte(fmt.Sprintf("m%d", i))}}))
	}
	_, err := bad.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
	// The suspects behind bad are now being re-sent, one per round trip.
	late := c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("late")}})
	for i, p := range good {
		msgOK(t, ctx, p, fmt.Sprintf("publish %d", i))
	}
	msgOK(t, ctx, late, "late")
	msgWaitDepth(t, c, q, 31)
	var got, want []string
	for i := range 30 {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	want = append(want, "late")
	for range want {
		got = append(got, string(msgGet(t, c, q, true).Body))
	}
	require.Equal(t, want, got, "the queue holds the messages in issue order")
}

// TestClientPublishOutcomes: outcomes a caller can tell apart: a returned
// mandatory publish fails with *ReturnedError (ErrNoRoute) and reaches no
// handler; a publish the queue refuses fails with ErrNacked.
func TestClientPublishOutcomes(t *testing.T) {
	ctx := msgCtx(t)
	handled := make(chan ops.Return, 1)
	c := msgDial(t, leveret.WithReturnHandler(func(r ops.Return) { handled <- r }))
	x := msgExchange(t, c)
	_, err := c.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "nowhere", Mandatory: true,
		Message: ops.Message{Headers: ops.Table{"k": "v"}, Body: []byte("returned")}}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNoRoute)
	var re *leveret.ReturnedError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "returned", string(re.Return.Message.Body))
	assert.Equal(t, ops.Table{"k": "v"}, re.Return.Message.Headers, "leveret's tag header is removed")
	assert.Equal(t, "nowhere", re.Return.RoutingKey)
	assert.NotErrorIs(t, err, leveret.ErrNacked)
	assert.Empty(t, handled)

	// A queue that refuses publishes when full nacks them.
	full := msgName(t, "full")
	msgCleanup(t, []string{full}, nil)
	msgOK(t, ctx, c.QueueDeclare(ops.QueueDeclare{Queue: full, Durable: true, Args: ops.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}}), "declare")
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: full, Message: ops.Message{Body: []byte("fits")}}), "first publish")
	_, err = c.Publish(ctx, ops.Publish{RoutingKey: full, Message: ops.Message{Body: []byte("refused")}}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNacked)
	assert.NotErrorIs(t, err, leveret.ErrNotConfirmed)
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: full, Message: ops.Message{Body: []byte("routed elsewhere")}, Exchange: x}), "the channel carries on")
}

// TestClientPublishCancelledContext: an operation whose ctx has ended
// before it is sent is not sent, on every publishing path.
func TestClientPublishCancelledContext(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	ch := msgChannel(t, c)
	done, cancel := context.WithCancel(ctx)
	cancel()
	o := ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("never")}}
	_, err := c.Publish(done, o).Wait(ctx)
	assert.ErrorIs(t, err, context.Canceled, "Client.Publish")
	_, err = ch.Publish(done, o).Wait(ctx)
	assert.ErrorIs(t, err, context.Canceled, "Channel.Publish")
	assert.ErrorIs(t, ch.Send(done, o), context.Canceled, "Channel.Send")
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("sent")}}), "publish")
	assert.Equal(t, uint32(1), msgDepth(t, c, q), "only the publish with a live ctx arrived")
}

// TestClientGetAckSurvivesUnrelatedFailure is the reproduction: a
// client-level Get's delivery can be acked after an unrelated operation
// failed on the client's only pooled channel.
func TestClientGetAckSurvivesUnrelatedFailure(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t, leveret.WithTopologyChannels(1))
	q := msgQueue(t, c)
	d := durableQueue(t, c) // declaring it again as not durable fails with 406
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("x")}}), "publish")
	g := msgOK(t, ctx, c.Get(ops.Get{Queue: q}), "get")
	require.False(t, g.Empty())
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: d, Durable: false}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed, "406 on another queue")
	msgOK(t, ctx, g.Delivery.Ack(), "ack after the unrelated failure")
	// Acked for real: nothing comes back.
	msgOK(t, ctx, g.Delivery.Channel().QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "round trip on the get channel")
	time.Sleep(100 * time.Millisecond) // a requeue would show within tens of ms (BROKER-NOTES)
	assert.Equal(t, uint32(0), msgDepth(t, c, q))
	e := msgOK(t, ctx, c.Get(ops.Get{Queue: q}), "get again")
	assert.True(t, e.Empty(), "the acked message was not redelivered")
}

// TestClientGetReadsOwnPublish: Get after an unwaited Client.Publish to
// its queue sees the message (the Get waits for the publish's confirm).
func TestClientGetReadsOwnPublish(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	for i := range 20 {
		c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: fmt.Appendf(nil, "m%d", i)}})
		g := msgOK(t, ctx, c.Get(ops.Get{Queue: q, NoAck: true}), "get")
		require.False(t, g.Empty(), "get %d saw the publish before it", i)
		assert.Equal(t, fmt.Sprintf("m%d", i), string(g.Delivery.Body))
	}
	// Gets on a missing queue fail alone, also when pipelined.
	missing := msgName(t, "missing")
	var ps []*leveret.Promise[leveret.GetResult]
	for range 3 {
		ps = append(ps, c.Get(ops.Get{Queue: missing}))
	}
	for _, p := range ps {
		_, err := p.Wait(ctx)
		assert.ErrorIs(t, err, leveret.ErrNotFound)
		assert.False(t, errors.Is(err, leveret.ErrNotExecuted) && !strings.Contains(err.Error(), missing))
	}
}

// TestConsumerShutdownKeepsAcks: a worker that shuts its consumer down
// while it still holds deliveries can ack every one of them; nothing is
// redelivered, no new delivery arrives after the cancel, and the
// consumer's channel closes afterwards.
func TestConsumerShutdownKeepsAcks(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "w", 10)
	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 10})
	held := make([]*leveret.Delivery, 0, 10)
	for range 10 {
		held = append(held, msgNext(t, ctx, cs))
	}
	msgPublishN(t, c, q, "late", 5) // must stay in the queue: the consumer is stopping

	stopped := make(chan error, 1)
	go func() { stopped <- cs.Shutdown(ctx) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) before the held deliveries were acked", err)
	case <-time.After(200 * time.Millisecond):
	}
	for i, d := range held {
		msgOK(t, ctx, d.Ack(), fmt.Sprintf("ack %d after Shutdown began", i))
	}
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Shutdown did not return after the last ack")
	}
	_, open := <-cs.Deliveries()
	assert.False(t, open, "no delivery after the cancel")
	select {
	case <-cs.Channel().Done():
	default:
		t.Fatal("Shutdown returned before the consumer's channel had closed")
	}
	assert.ErrorIs(t, cs.Channel().Err(), leveret.ErrClosed, "the consumer's channel closed")
	// The 10 acked messages are gone; only the 5 late ones remain.
	msgWaitDepth(t, c, q, 5)
	for range 5 {
		d := msgGet(t, c, q, true)
		assert.True(t, strings.HasPrefix(string(d.Body), "late"), "got %q", d.Body)
		assert.False(t, d.Redelivered)
	}
}

// TestConsumerShutdownTimeout: held deliveries that are never acked do not
// keep Shutdown waiting past its ctx; the broker requeues them.
func TestConsumerShutdownTimeout(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "w", 3)
	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 3})
	for range 3 {
		msgNext(t, ctx, cs)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, cs.Shutdown(short), context.DeadlineExceeded)
	<-cs.Channel().Done()
	msgWaitDepth(t, c, q, 3)
}

// TestNoAckPausedReaderLosesNothing: a NoAck consumer whose loop pauses
// while 3,000 messages arrive (far beyond its 1,024-slot buffer) gets every
// one of them, in order, and keeps running.
func TestNoAckPausedReaderLosesNothing(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	const n = 3000
	cs := msgConsume(t, c, ops.Consume{Queue: q, NoAck: true})
	msgPublishN(t, c, q, "n", n)
	time.Sleep(500 * time.Millisecond) // the paused loop
	for i := range n {
		d := msgNext(t, ctx, cs)
		require.Equal(t, fmt.Sprintf("n%d", i), string(d.Body), "delivery %d", i)
	}
	assert.NoError(t, cs.Err())
	msgOK(t, ctx, cs.Cancel(), "cancel")
	_, open := <-cs.Deliveries()
	assert.False(t, open)
}

// TestConsumerBufferSizedByPrefetch: a consumer with a prefetch limit and
// manual acks buffers exactly its prefetch count (all the broker can send
// it); one without a limit, or NoAck, gets the client's consumer buffer.
func TestConsumerBufferSizedByPrefetch(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	for _, tc := range []struct {
		o    ops.Consume
		want int
	}{
		{ops.Consume{Queue: q, Prefetch: 10}, 10},
		{ops.Consume{Queue: q, Prefetch: 5000}, 5000},
		{ops.Consume{Queue: q}, 1024},
		{ops.Consume{Queue: q, Prefetch: 10, NoAck: true}, 1024},
	} {
		cs := msgOK(t, ctx, c.Consume(tc.o), "consume")
		assert.Equal(t, tc.want, cap(cs.Deliveries()), "%+v", tc.o)
		msgOK(t, ctx, cs.Cancel(), "cancel")
	}
	ch := msgChannel(t, c)
	msgOK(t, ctx, ch.Qos(ops.Qos{PrefetchCount: 7}), "qos")
	cs := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q}), "consume after qos")
	assert.Equal(t, 7, cap(cs.Deliveries()), "the channel's prefetch")
}
