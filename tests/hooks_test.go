package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

type hookKey struct{}

// recordingHook implements every hook interface: it stamps each publish
// with a header and a context value, and records what it is told.
type recordingHook struct {
	mu        sync.Mutex
	published []string // routing keys, in OnPublish order
	done      map[string]error
	confirms  int // publishes settled by OnConfirm (summing count)
	returns   []ops.Return
	delivered []leveret.DeliveryInfo
	settled   []leveret.Settlement
	settleCtx []any // the hookKey value of each OnSettle's ctx
	events    []leveret.EventKind
}

func (h *recordingHook) OnPublish(ctx context.Context, p *leveret.PublishInfo) context.Context {
	if p.Message.Headers == nil {
		p.Message.Headers = ops.Table{}
	}
	p.Message.Headers["x-hook"] = "stamped:" + p.RoutingKey
	h.mu.Lock()
	h.published = append(h.published, p.RoutingKey)
	h.mu.Unlock()
	return context.WithValue(ctx, hookKey{}, p.RoutingKey)
}

func (h *recordingHook) OnPublishDone(ctx context.Context, p *leveret.PublishInfo, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Value(hookKey{}) != p.RoutingKey {
		err = fmt.Errorf("OnPublishDone got another context than OnPublish returned (err %v)", err)
	}
	h.done[fmt.Sprintf("%s/%v", p.RoutingKey, p.Confirmed)] = err
}

func (h *recordingHook) OnConfirm(_ *leveret.Channel, cf leveret.Confirmation, count int) {
	h.mu.Lock()
	h.confirms += count
	h.mu.Unlock()
}

func (h *recordingHook) OnReturn(_ *leveret.Channel, r ops.Return) {
	h.mu.Lock()
	h.returns = append(h.returns, r)
	h.mu.Unlock()
}

func (h *recordingHook) OnDelivery(d leveret.DeliveryInfo) context.Context {
	h.mu.Lock()
	h.delivered = append(h.delivered, d)
	h.mu.Unlock()
	return context.WithValue(context.Background(), hookKey{}, d.Delivery.Headers["x-hook"])
}

func (h *recordingHook) OnSettle(ctx context.Context, s leveret.Settlement) {
	h.mu.Lock()
	h.settled = append(h.settled, s)
	h.settleCtx = append(h.settleCtx, ctx.Value(hookKey{}))
	h.mu.Unlock()
}

func (h *recordingHook) OnConnectionEvent(e leveret.Event) {
	h.mu.Lock()
	h.events = append(h.events, e.Kind)
	h.mu.Unlock()
}

// snapshot runs f under the hook's lock once cond holds, or fails.
func (h *recordingHook) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return cond()
	}, 10*time.Second, 5*time.Millisecond, what)
}

// Hooks see every step of a message's life on the client-level API: the
// publish (whose header reaches the consumer, while the caller's table is
// left alone) and its confirmation with the context OnPublish returned,
// the delivery before it is handed over, and its ack with the delivery's
// context; a mandatory unroutable publish settles with its return.
func TestHooksClientLevel(t *testing.T) {
	h := &recordingHook{done: map[string]error{}}
	c := dial(t, leveret.WithHooks(h))
	ctx := testContext(t)
	q := msgQueue(t, c)

	callerHeaders := ops.Table{"app": "test"}
	_, err := c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Headers: callerHeaders, Body: []byte("one")}}).Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, ops.Table{"app": "test"}, callerHeaders, "the caller's headers table was written")

	_, err = c.Publish(ctx, ops.Publish{RoutingKey: "leveret.no-such-queue", Mandatory: true, Message: ops.Message{Body: []byte("lost")}}).Wait(ctx)
	var re *leveret.ReturnedError
	require.ErrorAs(t, err, &re)

	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 10})
	d := msgNext(t, ctx, cs)
	require.Equal(t, "stamped:"+q, d.Headers["x-hook"])
	require.Equal(t, "test", d.Headers["app"])
	require.Equal(t, "stamped:"+q, d.Context().Value(hookKey{}), "Delivery.Context is what OnDelivery returned")
	msgOK(t, ctx, d.Ack(), "ack")

	h.await(t, "publish outcomes, delivery and settlement reported", func() bool {
		return len(h.done) == 2 && len(h.settled) == 1
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Equal(t, []string{q, "leveret.no-such-queue"}, h.published)
	require.NoError(t, h.done[q+"/true"])
	require.ErrorAs(t, h.done["leveret.no-such-queue/true"], &re)
	require.Len(t, h.delivered, 1)
	require.Equal(t, q, h.delivered[0].Queue)
	require.False(t, h.delivered[0].AutoAck)
	require.Same(t, d, h.delivered[0].Delivery)
	s := h.settled[0]
	require.Equal(t, leveret.SettleAck, s.Kind)
	require.Equal(t, 1, s.Count)
	require.NoError(t, s.Err)
	require.Same(t, d, s.Delivery)
	require.Equal(t, "stamped:"+q, h.settleCtx[0])
	require.Contains(t, h.events, leveret.EventConnected)
	require.Empty(t, h.returns, "Client.Publish's return went to OnPublishDone, not OnReturn")
	require.Zero(t, h.confirms, "Client.Publish's confirms went to OnPublishDone, not OnConfirm")
}

// On an explicit channel: Send and Publish are reported when queued, the
// channel's confirmations add up to what was sent (multiple acks counted
// by what they settle), a return reaches OnReturn, a multiple ack by tag
// counts every delivery it settled, and a refused ack is reported with
// its error.
func TestHooksExplicitChannel(t *testing.T) {
	h := &recordingHook{done: map[string]error{}}
	c := dial(t, leveret.WithHooks(h))
	ctx := testContext(t)
	q := msgQueue(t, c)
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	msgOK(t, ctx, ch.ConfirmSelect(), "confirm.select")
	const n = 200
	for i := range n {
		require.NoError(t, ch.Send(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: fmt.Appendf(nil, "%d", i)}}))
	}
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{RoutingKey: "leveret.no-such-queue", Mandatory: true, Message: ops.Message{Body: []byte("r")}}), "publish")
	h.await(t, "confirms for every publish and the return", func() bool { return h.confirms == n+1 && len(h.returns) == 1 })

	cs, err := ch.Consume(ops.Consume{Queue: q, Prefetch: n}).Wait(ctx)
	require.NoError(t, err)
	var last *leveret.Delivery
	for range n {
		last = msgNext(t, ctx, cs)
	}
	msgOK(t, ctx, ch.Ack(ops.Ack{DeliveryTag: last.DeliveryTag, Multiple: true}), "ack multiple")
	require.ErrorIs(t, last.Ack().Err(), leveret.ErrUnknownDeliveryTag)

	h.await(t, "both settlements", func() bool { return len(h.settled) == 2 })
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.delivered, n)
	require.Equal(t, leveret.Settlement{Channel: ch, DeliveryTag: last.DeliveryTag, Multiple: true, Kind: leveret.SettleAck, Count: n}, h.settled[0])
	require.Nil(t, h.settleCtx[0], "a settlement by tag has no delivery context")
	require.Zero(t, h.settled[1].Count)
	require.ErrorIs(t, h.settled[1].Err, leveret.ErrUnknownDeliveryTag)
	require.Same(t, last, h.settled[1].Delivery)
	require.Len(t, h.done, 2)
	require.NoError(t, h.done[q+"/false"])
	require.NoError(t, h.done["leveret.no-such-queue/false"])
}

// A value that implements no hook interface is refused by Dial.
func TestHooksRejectsNonHook(t *testing.T) {
	_, err := leveret.Dial(testContext(t), amqpURL(), leveret.WithHooks(struct{}{}))
	require.Error(t, err)
	require.Contains(t, err.Error(), "implements none of the hook interfaces")
	require.False(t, errors.Is(err, context.DeadlineExceeded))
}

// TestDeliveryHookQueueFollowsRename: a server-named queue gets a new name
// at recovery, and DeliveryInfo.Queue of the deliveries after it names the
// new queue (the consumer keeps it outside registry.mu for the hook).
func TestDeliveryHookQueueFollowsRename(t *testing.T) {
	ctx := testContext(t)
	name := uniqueName(t, "conn")
	log := newEventLog()
	h := &recordingHook{done: map[string]error{}}
	c, err := leveret.Dial(ctx, amqpURL(), leveret.WithConnectionName(name), leveret.WithEventHandler(log.handle), leveret.WithHooks(h))
	require.NoError(t, err)
	defer c.Close(context.Background())
	q, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
	cs, err := c.Consume(ops.Consume{Queue: q.Queue, NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	receive := func() {
		t.Helper()
		select {
		case _, ok := <-cs.Deliveries():
			require.True(t, ok, "deliveries closed: %v", cs.Err())
		case <-ctx.Done():
			t.Fatal("no delivery")
		}
	}
	_, err = c.Publish(ctx, ops.Publish{RoutingKey: q.Queue, Message: ops.Message{Body: []byte("before")}}).Wait(ctx)
	require.NoError(t, err)
	receive()

	forceClose(t, name)
	rec := log.waitRecovered(t, 1)
	renamed, ok := rec.Recovery.Renamed[q.Queue]
	require.True(t, ok, "rename not reported: %+v", rec.Recovery)
	_, err = c.Publish(ctx, ops.Publish{RoutingKey: renamed, Message: ops.Message{Body: []byte("after")}}).Wait(ctx)
	require.NoError(t, err)
	receive()

	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.delivered, 2)
	require.Equal(t, q.Queue, h.delivered[0].Queue)
	require.Equal(t, renamed, h.delivered[1].Queue)
}
