package tests

// Consuming: fair dispatch, redelivery, slow consumers, acknowledgements,
// how a consumer ends, and the absence of per-message goroutines.

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// TestFairDispatch: with prefetch 1, a slow consumer holds one message at
// a time, so the fast one takes most of the work.
func TestFairDispatch(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	slow := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 1})
	fast := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 1})

	const n = 60
	var slowN, fastN atomic.Int64
	handled := make(chan struct{}, n)
	var wg sync.WaitGroup
	work := func(cs *leveret.Consumer, delay time.Duration, count *atomic.Int64) {
		for d := range cs.Deliveries() {
			time.Sleep(delay)
			if err := d.Ack().Err(); err != nil {
				t.Errorf("ack: %v", err)
			}
			count.Add(1)
			handled <- struct{}{}
		}
	}
	wg.Go(func() { work(slow, 50*time.Millisecond, &slowN) })
	wg.Go(func() { work(fast, 0, &fastN) })

	msgPublishN(t, c, q, "fair", n)
	for range n {
		select {
		case <-handled:
		case <-ctx.Done():
			t.Fatalf("handled %d of %d", slowN.Load()+fastN.Load(), n)
		}
	}
	msgOK(t, ctx, slow.Cancel(), "cancel slow")
	msgOK(t, ctx, fast.Cancel(), "cancel fast")
	wg.Wait()
	t.Logf("fast %d, slow %d", fastN.Load(), slowN.Load())
	assert.Equal(t, int64(n), slowN.Load()+fastN.Load())
	assert.Greater(t, fastN.Load(), 2*slowN.Load(), "fast consumer should get clearly more")
	assert.Equal(t, uint32(0), msgDepth(t, c, q))
}

// TestRedeliverAfterConnectionClose: deliveries left unacknowledged when a
// connection closes go to another consumer, marked redelivered.
func TestRedeliverAfterConnectionClose(t *testing.T) {
	ctx := msgCtx(t)
	a := msgDial(t)
	q := msgQueue(t, a)
	const n = 10
	msgPublishN(t, a, q, "r", n)

	csA := msgConsume(t, a, ops.Consume{Queue: q, Prefetch: 2 * n})
	first := map[string]bool{}
	for range n {
		d := msgNext(t, ctx, csA)
		assert.False(t, d.Redelivered)
		first[string(d.Body)] = true
	}
	require.Len(t, first, n)
	require.NoError(t, a.Close(ctx))
	assert.ErrorIs(t, msgEnded(t, ctx, csA), leveret.ErrClosed)

	b := msgDial(t)
	csB := msgConsume(t, b, ops.Consume{Queue: q, Prefetch: 2 * n})
	second := map[string]bool{}
	for range n {
		d := msgNext(t, ctx, csB)
		assert.True(t, d.Redelivered, "%s not marked redelivered", d.Body)
		second[string(d.Body)] = true
		msgOK(t, ctx, d.Ack(), "ack")
	}
	assert.Equal(t, first, second)
	msgOK(t, ctx, csB.Cancel(), "cancel")
	assert.Equal(t, uint32(0), msgDepth(t, b, q))
}

// msgWaitBuffered polls until the consumer's buffer holds n deliveries.
func msgWaitBuffered(t *testing.T, cs *leveret.Consumer, n int) {
	t.Helper()
	ctx := msgCtx(t)
	for len(cs.Deliveries()) < n {
		select {
		case <-ctx.Done():
			t.Fatalf("consumer buffer holds %d deliveries, want %d", len(cs.Deliveries()), n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestSlowConsumerDoesNotStallOthers: a consumer whose buffer is full and
// never read does not hold up the connection's other channels.
func TestSlowConsumerDoesNotStallOthers(t *testing.T) {
	ctx := msgCtx(t)
	// Buffer = the prefetch, 10: the broker fills it.
	c := msgDial(t, leveret.WithConsumerBuffer(1))
	q1, q2 := msgQueue(t, c), msgQueue(t, c)
	const n = 50
	msgPublishN(t, c, q1, "slow", n)
	msgPublishN(t, c, q2, "other", 1)
	msgWaitDepth(t, c, q1, n)

	ch1 := msgChannel(t, c)
	cs := msgOK(t, ctx, ch1.Consume(ops.Consume{Queue: q1, Prefetch: 10}), "consume")
	require.Equal(t, 10, cap(cs.Deliveries()))
	msgWaitBuffered(t, cs, 10)
	msgWaitDepth(t, c, q1, n-10) // the broker holds the rest back

	// Other channels of the same connection carry on.
	ch2 := msgChannel(t, c)
	q3 := msgName(t, "q3")
	msgCleanup(t, []string{q3}, nil)
	ok := msgOK(t, ctx, ch2.QueueDeclare(ops.QueueDeclare{Queue: q3, Durable: true}), "declare on another channel")
	assert.Equal(t, q3, ok.Queue)
	g := msgOK(t, ctx, ch2.Get(ops.Get{Queue: q2}), "get on another channel")
	require.False(t, g.Empty())
	assert.Equal(t, "other", string(g.Delivery.Body[:5]))
	msgOK(t, ctx, g.Delivery.Ack(), "ack")
	msgOK(t, ctx, c.QueueDeclare(ops.QueueDeclare{Queue: q2, Passive: true}), "client pool")
	assert.NoError(t, cs.Err(), "the full consumer is still running")
	assert.Equal(t, 10, len(cs.Deliveries()))

	// Reading it now drains the queue.
	seen := map[string]bool{}
	for range n {
		d := msgNext(t, ctx, cs)
		seen[string(d.Body)] = true
		msgOK(t, ctx, d.Ack(), "ack")
	}
	assert.Len(t, seen, n)
	msgOK(t, ctx, cs.Cancel(), "cancel")
}

// TestSlowConsumerOverflow: with the opt-in overflow limit (0: nothing
// beyond the buffer), a consumer without a prefetch limit that is not read
// overflows its buffer; leveret cancels it with ErrConsumerOverflow and
// gives the messages back to the queue instead of dropping them.
func TestSlowConsumerOverflow(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t, leveret.WithConsumerBuffer(5), leveret.WithConsumerOverflowLimit(0))
	q, other := msgQueue(t, c), msgQueue(t, c)
	const n = 50
	msgPublishN(t, c, q, "o", n)
	msgWaitDepth(t, c, q, n)

	cs := msgConsume(t, c, ops.Consume{Queue: q})
	<-cs.Done()
	assert.ErrorIs(t, cs.Err(), leveret.ErrConsumerOverflow)
	assert.Equal(t, 5, len(cs.Deliveries()), "what fitted is still readable")
	d := msgNext(t, ctx, cs)
	_, err := d.Ack().Wait(ctx)
	assert.Error(t, err, "its channel closed with the consumer")
	assert.ErrorIs(t, msgEnded(t, ctx, cs), leveret.ErrConsumerOverflow)

	// Nothing lost, and the connection works.
	msgWaitDepth(t, c, q, n)
	msgPublishN(t, c, other, "x", 1)
	msgGet(t, c, other, true)
	assert.NoError(t, c.Err())
}

// TestAckDouble: a second ack of one delivery is refused locally, and the
// channel is unharmed.
func TestAckDouble(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "d", 1)
	ch := msgChannel(t, c)
	d := msgChanGet(t, ch, q)
	msgOK(t, ctx, d.Ack(), "first ack")
	second := d.Ack()
	select {
	case <-second.Done():
	default:
		t.Fatal("a refused ack must settle at once")
	}
	assert.ErrorIs(t, second.Err(), leveret.ErrUnknownDeliveryTag)
	assert.ErrorIs(t, d.Nack(ops.Nack{}).Err(), leveret.ErrUnknownDeliveryTag)
	assert.ErrorIs(t, d.Reject(ops.Reject{}).Err(), leveret.ErrUnknownDeliveryTag)
	assert.ErrorIs(t, ch.Ack(ops.Ack{DeliveryTag: 99}).Err(), leveret.ErrUnknownDeliveryTag)

	ok := msgOK(t, ctx, ch.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "channel still works")
	assert.Equal(t, uint32(0), ok.MessageCount)
	assert.NoError(t, ch.Err())
}

// TestAckAfterChannelClosed: acknowledging a delivery whose channel has
// closed fails and sends nothing, not even to a new channel that reuses the
// number and has a delivery with the same tag.
func TestAckAfterChannelClosed(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "s", 2)
	msgWaitDepth(t, c, q, 2)

	ch1 := msgChannel(t, c)
	d1 := msgChanGet(t, ch1, q)
	require.NoError(t, ch1.Close(ctx))
	_, err := d1.Ack().Wait(ctx)
	require.Error(t, err)
	assert.ErrorIs(t, err, leveret.ErrClosed)

	ch2 := msgChannel(t, c)
	d2 := msgChanGet(t, ch2, q)
	require.Equal(t, d1.DeliveryTag, d2.DeliveryTag, "same tag on the new channel")
	for _, p := range []*leveret.Promise[struct{}]{d1.Ack(), d1.Nack(ops.Nack{Requeue: true}), d1.Reject(ops.Reject{})} {
		_, err := p.Wait(ctx)
		assert.Error(t, err, "stale acknowledgement")
	}
	// Had a stale ack reached ch2, its tag would be gone there and this
	// reject would make the broker close ch2 with 406.
	msgOK(t, ctx, d2.Reject(ops.Reject{Requeue: true}), "reject d2")
	msgOK(t, ctx, ch2.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "ch2 still works")
	assert.NoError(t, ch2.Err())
	// Both messages are back. (Poll: RabbitMQ answers a queue's stat
	// query ahead of a requeue it has not processed yet.)
	msgWaitDepth(t, c, q, 2)

	// A channel the broker closed refuses acks as well, with its error.
	ch3 := msgChannel(t, c)
	d3 := msgChanGet(t, ch3, q)
	msgOK(t, ctx, ch3.Publish(ctx, ops.Publish{Exchange: msgName(t, "missing"), Message: ops.Message{Body: []byte("x")}}), "publish")
	<-ch3.Done()
	_, err = d3.Ack().Wait(ctx)
	assert.ErrorIs(t, err, leveret.ErrNotFound)
	msgWaitDepth(t, c, q, 2)
	assert.NoError(t, c.Err())
}

// TestAckNackRequeue: nack with requeue puts the message back, redelivered.
func TestAckNackRequeue(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "n", 1)
	ch := msgChannel(t, c)
	d := msgChanGet(t, ch, q)
	assert.False(t, d.Redelivered)
	msgOK(t, ctx, d.Nack(ops.Nack{Requeue: true}), "nack")
	d = msgChanGet(t, ch, q)
	assert.True(t, d.Redelivered)
	assert.Equal(t, "n0", string(d.Body))
	msgOK(t, ctx, d.Ack(), "ack")
	g := msgOK(t, ctx, ch.Get(ops.Get{Queue: q}), "get")
	assert.True(t, g.Empty())
	assert.NoError(t, ch.Err())
}

// TestAckNackMultiple: nack with multiple settles every earlier delivery.
func TestAckNackMultiple(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "m", 5)
	msgWaitDepth(t, c, q, 5)
	ch := msgChannel(t, c)
	var ds []*leveret.Delivery
	for range 5 {
		ds = append(ds, msgChanGet(t, ch, q))
	}
	msgOK(t, ctx, ch.Nack(ops.Nack{DeliveryTag: ds[2].DeliveryTag, Multiple: true, Requeue: true}), "nack 1-3")
	for _, d := range ds[:3] {
		assert.ErrorIs(t, d.Ack().Err(), leveret.ErrUnknownDeliveryTag, "settled by the multiple nack")
	}
	msgOK(t, ctx, ds[3].Ack(), "ack 4")
	msgOK(t, ctx, ds[4].Nack(ops.Nack{Requeue: false}), "nack 5, dropped")

	got := map[string]bool{}
	for range 3 {
		d := msgChanGet(t, ch, q)
		assert.True(t, d.Redelivered)
		got[string(d.Body)] = true
		msgOK(t, ctx, d.Ack(), "ack")
	}
	assert.Equal(t, map[string]bool{"m0": true, "m1": true, "m2": true}, got)
	g := msgOK(t, ctx, ch.Get(ops.Get{Queue: q}), "get")
	assert.True(t, g.Empty(), "m3 acked, m4 dropped")
	assert.NoError(t, ch.Err())
}

// TestAckRunsAckOnlyWhatWasAcked: acks in order, out of order and around
// a gap, issued back to back so that runs of them can go out as one
// multiple ack, settle exactly the deliveries acked: the one left
// unacked comes back when the channel closes, and only it.
func TestAckRunsAckOnlyWhatWasAcked(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "r", 20)
	msgWaitDepth(t, c, q, 20)
	ch := msgChannel(t, c)
	var ds []*leveret.Delivery
	for range 20 {
		ds = append(ds, msgChanGet(t, ch, q))
	}
	// Indexes: 0-4 in order, then 7 before 6, then 8-11 and 13-19 past the
	// gap at 5 and 12, then 5, which leaves only 12 outstanding.
	order := []int{0, 1, 2, 3, 4, 7, 6, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 5}
	ws := make([]leveret.Waiter, 0, len(order))
	for _, i := range order {
		ws = append(ws, ds[i].Ack())
	}
	require.NoError(t, leveret.WaitAll(ctx, ws...))
	require.NoError(t, ch.Close(ctx))

	msgWaitDepth(t, c, q, 1)
	d := msgGet(t, c, q, true)
	assert.Equal(t, "r12", string(d.Body))
	assert.True(t, d.Redelivered)
}

// TestAckRejectDrops: reject without requeue discards the message.
func TestAckRejectDrops(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "x", 1)
	ch := msgChannel(t, c)
	d := msgChanGet(t, ch, q)
	msgOK(t, ctx, d.Reject(ops.Reject{Requeue: false}), "reject")
	g := msgOK(t, ctx, ch.Get(ops.Get{Queue: q}), "get")
	assert.True(t, g.Empty(), "not requeued")
	require.NoError(t, ch.Close(ctx))
	// Had it been left unacknowledged, closing the channel would requeue it.
	g = msgOK(t, ctx, c.Get(ops.Get{Queue: q}), "get")
	assert.True(t, g.Empty())
}

// TestAckRecoverRequeue: basic.recover redelivers what is unacknowledged on
// the channel; the old tags become void, the new ones work.
func TestAckRecoverRequeue(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "rc", 3)
	ch := msgChannel(t, c)
	cs := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q, Prefetch: 10}), "consume")
	var old []*leveret.Delivery
	for range 3 {
		d := msgNext(t, ctx, cs)
		assert.False(t, d.Redelivered)
		old = append(old, d)
	}
	msgOK(t, ctx, ch.Recover(ops.Recover{Requeue: true}), "recover")
	got := map[string]bool{}
	for range 3 {
		d := msgNext(t, ctx, cs)
		assert.True(t, d.Redelivered)
		got[string(d.Body)] = true
		msgOK(t, ctx, d.Ack(), "ack redelivery")
	}
	assert.Equal(t, map[string]bool{"rc0": true, "rc1": true, "rc2": true}, got)
	for _, d := range old {
		assert.ErrorIs(t, d.Ack().Err(), leveret.ErrUnknownDeliveryTag)
	}
	msgOK(t, ctx, cs.Cancel(), "cancel")
	assert.NoError(t, ch.Err())
	assert.Equal(t, uint32(0), msgOK(t, ctx, ch.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "depth").MessageCount)
}

// TestAckQos: basic.qos resolves, and its prefetch holds back deliveries
// to a consumer started after it.
func TestAckQos(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	ch := msgChannel(t, c)
	msgOK(t, ctx, ch.Qos(ops.Qos{PrefetchCount: 50, Global: true}), "global qos")
	msgOK(t, ctx, ch.Qos(ops.Qos{PrefetchCount: 5}), "qos")
	msgPublishN(t, c, q, "p", 10)
	cs := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q}), "consume")
	msgWaitBuffered(t, cs, 5)
	msgWaitDepth(t, c, q, 5) // the other five stay in the queue
	assert.LessOrEqual(t, len(cs.Deliveries()), 5)
	for range 10 {
		msgOK(t, ctx, msgNext(t, ctx, cs).Ack(), "ack")
	}
	msgOK(t, ctx, cs.Cancel(), "cancel")
	assert.NoError(t, ch.Err())
}

// TestConsumeEndBrokerCancel: deleting the queue makes the broker cancel
// the consumer; the stream closes with ErrConsumerCancelled.
func TestConsumeEndBrokerCancel(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q1, q2 := msgQueue(t, c), msgQueue(t, c)
	own := msgConsume(t, c, ops.Consume{Queue: q1})
	ch := msgChannel(t, c)
	onCh := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q2}), "consume on channel")

	msgPublishN(t, c, q1, "b", 1)
	msgNext(t, ctx, own)
	msgOK(t, ctx, c.QueueDelete(ops.QueueDelete{Queue: q1}), "delete q1")
	msgOK(t, ctx, c.QueueDelete(ops.QueueDelete{Queue: q2}), "delete q2")

	assert.ErrorIs(t, msgEnded(t, ctx, own), leveret.ErrConsumerCancelled)
	assert.ErrorIs(t, msgEnded(t, ctx, onCh), leveret.ErrConsumerCancelled)
	select { // Client.Consume's channel goes with its consumer
	case <-own.Channel().Done():
	case <-ctx.Done():
		t.Fatal("consumer's own channel not closed")
	}
	// An explicit channel outlives its consumer.
	assert.NoError(t, ch.Err())
	msgOK(t, ctx, ch.QueueDeclare(ops.QueueDeclare{Queue: q2, Durable: true}), "explicit channel still works")
}

// TestConsumeEndCancel: Cancel resolves; what was buffered is still
// delivered, then the stream closes and Err is nil.
func TestConsumeEndCancel(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "c", 3)
	ch := msgChannel(t, c)
	cs := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q, Prefetch: 10}), "consume")
	msgWaitBuffered(t, cs, 3)
	msgOK(t, ctx, cs.Cancel(), "cancel")
	n := 0
	for d := range cs.Deliveries() {
		n++
		msgOK(t, ctx, d.Ack(), "ack after cancel")
	}
	assert.Equal(t, 3, n)
	assert.NoError(t, cs.Err())
	assert.NoError(t, ch.Err())
	assert.Equal(t, uint32(0), msgOK(t, ctx, ch.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "depth").MessageCount)

	// Client.Consume: the cancel also closes the consumer's own channel.
	own := msgConsume(t, c, ops.Consume{Queue: q})
	msgOK(t, ctx, own.Cancel(), "cancel")
	assert.NoError(t, msgEnded(t, ctx, own))
	<-own.Channel().Done()
}

// TestConsumeEndChannelError: a channel error ends the consumers on that
// channel with the *ChannelError.
func TestConsumeEndChannelError(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	ch := msgChannel(t, c)
	cs := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q}), "consume")
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{Exchange: msgName(t, "missing"), Message: ops.Message{Body: []byte("x")}}), "publish")

	err := msgEnded(t, ctx, cs)
	var ce *leveret.ChannelError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, leveret.ReplyCode(404), ce.Code)
	assert.ErrorIs(t, err, leveret.ErrNotFound)
	assert.Equal(t, ch.Err(), err)
	assert.NoError(t, c.Err())
}

// TestConsumeEndConnectionClose: closing the connection ends its consumers.
func TestConsumeEndConnectionClose(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	own := msgConsume(t, c, ops.Consume{Queue: q})
	ch := msgChannel(t, c)
	onCh := msgOK(t, ctx, ch.Consume(ops.Consume{Queue: q}), "consume")
	require.NoError(t, c.Close(ctx))
	for _, cs := range []*leveret.Consumer{own, onCh} {
		err := msgEnded(t, ctx, cs)
		assert.ErrorIs(t, err, leveret.ErrClosed)
	}
	assert.ErrorIs(t, ch.Err(), leveret.ErrClosed)
}

// TestGoroutinesPerMessage: 10,000 messages in flight and in consumer
// buffers cost no goroutines.
func TestGoroutinesPerMessage(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	const queues, perQueue = 10, 1000
	qs := make([]string, queues)
	for i := range qs {
		qs[i] = msgQueue(t, c)
	}
	base := runtime.NumGoroutine()
	peak := base
	sample := func() { peak = max(peak, runtime.NumGoroutine()) }

	var css []*leveret.Consumer
	for _, q := range qs {
		css = append(css, msgConsume(t, c, ops.Consume{Queue: q, Prefetch: perQueue}))
	}
	sample()
	var ws []leveret.Waiter
	for i := range perQueue {
		for _, q := range qs {
			ws = append(ws, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: fmt.Appendf(nil, "g%d", i)}}))
			sample()
		}
	}
	require.NoError(t, leveret.WaitAll(ctx, ws...))
	for {
		buffered := 0
		for _, cs := range css {
			buffered += len(cs.Deliveries())
		}
		sample()
		if buffered == queues*perQueue {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("buffered %d of %d", buffered, queues*perQueue)
		case <-time.After(5 * time.Millisecond):
		}
	}
	for _, cs := range css {
		for i := range perQueue {
			d := msgNext(t, ctx, cs)
			if (i+1)%100 == 0 {
				msgOK(t, ctx, cs.Channel().Ack(ops.Ack{DeliveryTag: d.DeliveryTag, Multiple: true}), "ack")
			}
			sample()
		}
		msgOK(t, ctx, cs.Cancel(), "cancel")
	}
	t.Logf("goroutines: baseline %d, peak %d", base, peak)
	assert.LessOrEqual(t, peak, base+10, "goroutines grew with the number of messages")
	for _, q := range qs {
		assert.Equal(t, uint32(0), msgDepth(t, c, q))
	}
	if err := c.Err(); err != nil && !errors.Is(err, leveret.ErrClosed) {
		t.Errorf("client: %v", err)
	}
}

// TestConsumeErrWhenDeliveriesClose: the documented way to read a consumer,
// `for d := range cs.Deliveries() {}; err := cs.Err()`, must see why it
// ended: Err has to be set before Deliveries is closed. Repeated because the
// window is small.
func TestConsumeErrWhenDeliveriesClose(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	const rounds = 50
	misses := 0
	for i := range rounds {
		q := msgName(t, fmt.Sprint("q", i))
		msgCleanup(t, []string{q}, nil)
		msgOK(t, ctx, c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}), "declare")
		cs := msgConsume(t, c, ops.Consume{Queue: q})
		msgOK(t, ctx, c.QueueDelete(ops.QueueDelete{Queue: q}), "delete")
		for range cs.Deliveries() {
		}
		if err := cs.Err(); !errors.Is(err, leveret.ErrConsumerCancelled) {
			misses++
		}
	}
	assert.Zero(t, misses, "Err() was not ErrConsumerCancelled right after Deliveries closed, in %d of %d rounds", misses, rounds)
}

// A client-level consumer started right behind the declare of its queue,
// without waiting for the declare, runs once the declare is done (it would
// get 404 NOT_FOUND if it raced ahead on its own channel).
func TestClientConsumeBehindDeclare(t *testing.T) {
	const n = 20
	c := dial(t)
	ctx := testContext(t)
	qs := uniqueNames(t, "q", n)
	deleteAtEnd(t, qs, nil)

	consumers := make([]*leveret.Promise[*leveret.Consumer], n)
	for i, q := range qs {
		c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true})
		consumers[i] = c.Consume(ops.Consume{Queue: q, Prefetch: 10})
	}
	for i, q := range qs {
		cs := msgOK(t, ctx, consumers[i], "consume behind declare of "+q)
		msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte(q)}}), "publish")
		select {
		case d := <-cs.Deliveries():
			require.NotNil(t, d)
			assert.Equal(t, q, string(d.Body))
			msgOK(t, ctx, d.Ack(), "ack")
		case <-ctx.Done():
			t.Fatalf("no delivery on %s", q)
		}
		msgOK(t, ctx, cs.Cancel(), "cancel")
	}
	require.NoError(t, c.Err())
}
