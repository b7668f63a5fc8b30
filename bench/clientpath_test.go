package main

import (
	"context"
	"testing"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The benchmarks here run each client's whole publish path (API call,
// encoding, socket writes, and for confirms the reading and matching of
// acks) against the in-process sink instead of a broker, so ns/op and
// allocs/op are the client's own:
//
//	cd bench && go test -run '^$' -bench . -benchmem

func leveretSinkClient(b *testing.B, opts ...leveret.Option) (*leveret.Client, *leveret.Channel) {
	ctx := context.Background()
	c, err := leveret.Dial(ctx, startSink(b).url(), append(opts, leveret.WithHeartbeat(0))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(ctx) })
	ch, err := c.Channel(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return c, ch
}

func amqpSinkChannel(b *testing.B) *amqp.Channel {
	conn, err := amqp.DialConfig(startSink(b).url(), amqp.Config{Heartbeat: 0})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	return ch
}

func BenchmarkClientPublish(b *testing.B) {
	body := make([]byte, bodySize)
	b.Run("leveret", func(b *testing.B) {
		_, ch := leveretSinkClient(b)
		ctx := context.Background()
		var last *leveret.Promise[struct{}]
		b.ReportAllocs()
		for b.Loop() {
			last = ch.Publish(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: body}})
		}
		if _, err := last.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("amqp091-go", func(b *testing.B) {
		ch := amqpSinkChannel(b)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := ch.PublishWithContext(ctx, "", "q", false, false, amqp.Publishing{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClientConfirmedPublish keeps up to 1,000 publishes unconfirmed,
// as the confirm scenario of the main benchmark does.
func BenchmarkClientConfirmedPublish(b *testing.B) {
	const size = 1000
	body := make([]byte, bodySize)
	b.Run("leveret", func(b *testing.B) {
		_, ch := leveretSinkClient(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		w := newWindow(size)
		ch.OnConfirm(w.confirm)
		if _, err := ch.ConfirmSelect().Wait(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := w.acquire(ctx); err != nil {
				b.Fatal(err)
			}
			ch.Publish(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: body}})
		}
		if err := w.drain(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("leveret-confirm-pkg", func(b *testing.B) {
		c, _ := leveretSinkClient(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pub, err := confirm.New(ctx, c, confirm.WithWindow(size))
		if err != nil {
			b.Fatal(err)
		}
		var last *leveret.Promise[confirm.Outcome]
		b.ReportAllocs()
		for b.Loop() {
			last = pub.Publish(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: body}})
		}
		if err := pub.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if out, err := last.Wait(ctx); err != nil || !out.Acked() {
			b.Fatal(out, err)
		}
	})
	b.Run("leveret-client", func(b *testing.B) {
		c, _ := leveretSinkClient(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ring := make([]*leveret.Promise[struct{}], size) // wait on the oldest, as amqp091-go does
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if old := ring[i%size]; old != nil {
				if _, err := old.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			ring[i%size] = c.Publish(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: body}})
			i++
		}
		for _, p := range ring {
			if p != nil {
				if _, err := p.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("amqp091-go", func(b *testing.B) {
		ch := amqpSinkChannel(b)
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ring := make([]*amqp.DeferredConfirmation, size)
		head, count := 0, 0
		wait := func() {
			if ok, err := ring[head].WaitContext(ctx); err != nil || !ok {
				b.Fatal(ok, err)
			}
			head, count = (head+1)%size, count-1
		}
		b.ReportAllocs()
		for b.Loop() {
			if count == size {
				wait()
			}
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", "q", false, false, amqp.Publishing{Body: body})
			if err != nil {
				b.Fatal(err)
			}
			ring[(head+count)%size] = dc
			count++
		}
		for count > 0 {
			wait()
		}
	})
}

// noopHook implements every hook interface and does nothing: the cost of
// the hooks machinery itself.
type noopHook struct{}

func (noopHook) OnPublish(ctx context.Context, _ *leveret.PublishInfo) context.Context { return ctx }
func (noopHook) OnPublishDone(context.Context, *leveret.PublishInfo, error)            {}
func (noopHook) OnDelivery(leveret.DeliveryInfo) context.Context                       { return nil }
func (noopHook) OnSettle(context.Context, leveret.Settlement)                          {}

// BenchmarkHooks measures the publish path (Channel.Send) and the delivery
// path (a consumer with prefetch 100, each delivery acked) without hooks
// and with a hook that does nothing. Without hooks: 0 allocations per
// send, and per delivery the body and the Delivery (allocs/op shows 1:
// the count is truncated, and the deliveries prefetched before the clock
// started were allocated outside it).
func BenchmarkHooks(b *testing.B) {
	body := make([]byte, bodySize)
	for _, hooked := range []bool{false, true} {
		name := "none"
		var opts []leveret.Option
		if hooked {
			name, opts = "noop", []leveret.Option{leveret.WithHooks(noopHook{})}
		}
		b.Run("send/"+name, func(b *testing.B) {
			ctx := context.Background()
			_, ch := leveretSinkClient(b, opts...)
			b.ReportAllocs()
			for b.Loop() {
				if err := ch.Send(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: body}}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("deliver/"+name, func(b *testing.B) {
			ctx := context.Background()
			_, ch := leveretSinkClient(b, opts...)
			cs, err := ch.Consume(ops.Consume{Queue: "q", Prefetch: 100}).Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				d := <-cs.Deliveries()
				if err := d.Ack().Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
