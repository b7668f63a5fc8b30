package leveret_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/ops"
)

type ctxKey struct{}

// recordingHook implements every hook interface and notes each call; its
// methods call back into the client (a hook run under one of the client's
// locks would deadlock).
type recordingHook struct {
	mu    sync.Mutex
	calls []string
}

func (h *recordingHook) note(format string, args ...any) {
	h.mu.Lock()
	h.calls = append(h.calls, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

func (h *recordingHook) has(call string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.calls {
		if c == call {
			return true
		}
	}
	return false
}

func (h *recordingHook) OnPublish(ctx context.Context, p *leveret.PublishInfo) context.Context {
	if p.Message.Headers == nil {
		p.Message.Headers = ops.Table{}
	}
	p.Message.Headers["trace"] = "t-" + p.RoutingKey
	h.note("publish %s confirmed=%v", p.RoutingKey, p.Confirmed)
	return context.WithValue(ctx, ctxKey{}, p.RoutingKey)
}

func (h *recordingHook) OnPublishDone(ctx context.Context, p *leveret.PublishInfo, err error) {
	h.note("done %s ctx=%v err=%v", p.RoutingKey, ctx.Value(ctxKey{}), err != nil)
}

func (h *recordingHook) OnConfirm(ch *leveret.Channel, cf leveret.Confirmation, count int) {
	_ = ch.Err()
	h.note("confirm %d ack=%v count=%d", cf.DeliveryTag, cf.Ack, count)
}

func (h *recordingHook) OnReturn(ch *leveret.Channel, r ops.Return) {
	_ = ch.Err()
	h.note("return %s %d", r.RoutingKey, r.ReplyCode)
}

func (h *recordingHook) OnDelivery(d leveret.DeliveryInfo) context.Context {
	h.note("delivery %s tag=%d queue=%s auto=%v", d.Delivery.ConsumerTag, d.Delivery.DeliveryTag, d.Queue, d.AutoAck)
	return context.WithValue(context.Background(), ctxKey{}, d.Delivery.ConsumerTag)
}

func (h *recordingHook) OnSettle(ctx context.Context, s leveret.Settlement) {
	h.note("settle %s tag=%d count=%d ctx=%v err=%v", s.Kind, s.DeliveryTag, s.Count, ctx.Value(ctxKey{}), s.Err != nil)
}

func (h *recordingHook) OnConnectionEvent(e leveret.Event) { h.note("event %s", e.Kind) }

// Every hook is called where its documentation says, with what it says.
func TestHooksSeeEveryKindOfCall(t *testing.T) {
	leakCheck(t)
	h := &recordingHook{}
	c, b, s := brokerClient(t, leveret.WithHooks(h))
	ctx := waitCtx(t)
	_, err := c.Publish(ctx, ops.Publish{RoutingKey: "cp"}).Wait(ctx)
	require.NoError(t, err)
	_, err = c.Publish(ctx, ops.Publish{RoutingKey: "unroutable", Mandatory: true}).Wait(ctx)
	require.Error(t, err)

	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.ConfirmSelect().Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, leveret.WaitAll(ctx,
		ch.Publish(ctx, ops.Publish{RoutingKey: "chp"}),
		ch.Publish(ctx, ops.Publish{RoutingKey: "unroutable", Mandatory: true})))
	require.NoError(t, ch.Send(ctx, ops.Publish{RoutingKey: "send"}))

	manual, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "manual"}))
	require.NoError(t, err)
	auto, err := await(t, c.Consume(ops.Consume{Queue: "q2", ConsumerTag: "auto", NoAck: true}))
	require.NoError(t, err)
	var ds []*leveret.Delivery
	for range 3 {
		_, err := b.DeliverToAll(s.Conns()[0], "m")
		require.NoError(t, err)
		d := receive(t, manual.Deliveries(), "delivery")
		require.Equal(t, "manual", d.Context().Value(ctxKey{}))
		ds = append(ds, d)
		receive(t, auto.Deliveries(), "auto delivery")
	}
	require.NoError(t, leveret.WaitAll(ctx, ds[0].Ack(), ds[1].Nack(ops.Nack{}), ds[2].Reject(ops.Reject{})))
	_, err = ds[0].Ack().Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag)
	_, err = ch.Ack(ops.Ack{DeliveryTag: 99}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag)
	require.NoError(t, closeClient(t, c))

	for _, want := range []string{
		"publish cp confirmed=true", "done cp ctx=cp err=false",
		"publish unroutable confirmed=true", "done unroutable ctx=unroutable err=true",
		"publish chp confirmed=false", "done chp ctx=chp err=false", "publish send confirmed=false",
		"confirm 1 ack=true count=1", "confirm 2 ack=true count=1", "return unroutable 312",
		"delivery manual tag=1 queue=q auto=false", "delivery auto tag=1 queue=q2 auto=true",
		"settle ack tag=1 count=1 ctx=manual err=false", "settle nack tag=2 count=1 ctx=manual err=false",
		"settle reject tag=3 count=1 ctx=manual err=false", "settle ack tag=1 count=0 ctx=manual err=true",
		"settle ack tag=99 count=0 ctx=<nil> err=true",
		"event connected", "event closed",
	} {
		require.True(t, h.has(want), "no %q in %q", want, h.calls)
	}
	require.Equal(t, "SettleKind(9)", leveret.SettleKind(9).String())
}

// A hook that implements none of the interfaces is refused at Dial.
func TestHooksRefuseAValueThatIsNoHook(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, (&fakeserver.Broker{}).Serve)
	_, err := leveret.Dial(waitCtx(t), s.URL(), leveret.WithHooks(struct{}{}))
	require.ErrorContains(t, err, "hook")
}
