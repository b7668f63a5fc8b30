package otelleveret_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
	"github.com/leveret-mq/leveret/otelleveret"
)

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/%2f"
}

// fixture is a client traced and measured into memory, with a queue.
type fixture struct {
	c      *leveret.Client
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	q      string
}

func setup(t *testing.T) (*fixture, context.Context) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	f := &fixture{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	f.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader))
	h, err := otelleveret.New(otelleveret.WithTracerProvider(f.tp), otelleveret.WithMeterProvider(mp))
	require.NoError(t, err)
	f.c, err = leveret.Dial(ctx, brokerURL(), leveret.WithHooks(h))
	require.NoError(t, err, "dial %s", brokerURL())
	t.Cleanup(func() { require.NoError(t, f.c.Close(context.Background())) })
	f.q = fmt.Sprintf("otelleveret.%s.%08x", t.Name(), rand.Uint32())
	_, err = f.c.QueueDeclare(ops.QueueDeclare{Queue: f.q, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { f.c.QueueDelete(ops.QueueDelete{Queue: f.q}).Wait(context.Background()) })
	return f, ctx
}

func (f *fixture) ended(t *testing.T, kind trace.SpanKind, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	var out []sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		out = out[:0]
		for _, s := range f.spans.Ended() {
			if s.SpanKind() == kind {
				out = append(out, s)
			}
		}
		return len(out) >= n
	}, 10*time.Second, 5*time.Millisecond, "%d %v spans", n, kind)
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// A Client.Publish and its delivery make a producer and a consumer span in
// one trace: the consumer's parent is the producer, with a link to it,
// and both carry the messaging attributes.
func TestPublishAndProcessSpansLinked(t *testing.T) {
	f, ctx := setup(t)
	_, err := f.c.Publish(ctx, ops.Publish{RoutingKey: f.q, Message: ops.Message{MessageID: "m-1", Body: []byte("hello")}}).Wait(ctx)
	require.NoError(t, err)
	cs, err := f.c.Consume(ops.Consume{Queue: f.q, Prefetch: 1}).Wait(ctx)
	require.NoError(t, err)
	d := <-cs.Deliveries()
	require.True(t, trace.SpanContextFromContext(d.Context()).IsValid(), "the delivery's context carries the process span")
	_, child := f.tp.Tracer("test").Start(d.Context(), "handler")
	child.End()
	_, err = d.Ack().Wait(ctx)
	require.NoError(t, err)

	pub := f.ended(t, trace.SpanKindProducer, 1)[0]
	proc := f.ended(t, trace.SpanKindConsumer, 1)[0]
	require.Equal(t, "publish", pub.Name(), "default exchange: no destination in the name")
	pa := attrs(pub)
	require.Equal(t, "rabbitmq", pa["messaging.system"].AsString())
	require.Equal(t, "", pa["messaging.destination.name"].AsString())
	require.Equal(t, f.q, pa["messaging.rabbitmq.destination.routing_key"].AsString())
	require.Equal(t, "m-1", pa["messaging.message.id"].AsString())
	require.Equal(t, int64(5), pa["messaging.message.body.size"].AsInt64())
	require.Equal(t, "publish", pa["messaging.operation.name"].AsString())
	require.Equal(t, "send", pa["messaging.operation.type"].AsString())

	require.Equal(t, "process "+f.q, proc.Name())
	ca := attrs(proc)
	require.Equal(t, "process", ca["messaging.operation.name"].AsString())
	require.Equal(t, f.q, ca["messaging.destination.subscription.name"].AsString())
	require.Equal(t, "m-1", ca["messaging.message.id"].AsString())
	require.Equal(t, "ack", ca["leveret.settle"].AsString())
	require.Equal(t, pub.SpanContext().TraceID(), proc.SpanContext().TraceID())
	require.Equal(t, pub.SpanContext().SpanID(), proc.Parent().SpanID())
	require.Len(t, proc.Links(), 1)
	require.Equal(t, pub.SpanContext().SpanID(), proc.Links()[0].SpanContext.SpanID())
	// No order between the two ends: a Client.Publish's OnPublishDone (which
	// ends its span) is posted to the dispatcher after its promise settles,
	// so under load it can run after the consumer has acked.

	var handler sdktrace.ReadOnlySpan
	for _, s := range f.spans.Ended() {
		if s.Name() == "handler" {
			handler = s
		}
	}
	require.NotNil(t, handler)
	require.Equal(t, proc.SpanContext().SpanID(), handler.Parent().SpanID(), "user spans nest under the process span")
}

// Trace context crosses to and from amqp091-go through the same W3C
// headers: an amqp091-go publisher's span is the parent of leveret's
// process span, and leveret's publish span is what an amqp091-go consumer
// extracts.
func TestTraceContextInteropWithAmqp091(t *testing.T) {
	f, ctx := setup(t)
	conn, err := amqp.Dial(brokerURL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	prop := propagation.TraceContext{}

	// amqp091-go → leveret.
	pctx, span := f.tp.Tracer("amqp091-side").Start(ctx, "amqp091 publish")
	headers := amqp.Table{}
	prop.Inject(pctx, amqpCarrier(headers))
	span.End()
	require.NoError(t, ch.PublishWithContext(ctx, "", f.q, false, false, amqp.Publishing{Headers: headers, Body: []byte("from amqp091-go")}))
	cs, err := f.c.Consume(ops.Consume{Queue: f.q, Prefetch: 1}).Wait(ctx)
	require.NoError(t, err)
	d := <-cs.Deliveries()
	_, err = d.Ack().Wait(ctx)
	require.NoError(t, err)
	proc := f.ended(t, trace.SpanKindConsumer, 1)[0]
	require.Equal(t, span.SpanContext().TraceID(), proc.SpanContext().TraceID())
	require.Equal(t, span.SpanContext().SpanID(), proc.Parent().SpanID())
	require.NoError(t, cs.Shutdown(ctx))

	// leveret → amqp091-go.
	q2 := f.q + ".to091"
	_, err = f.c.QueueDeclare(ops.QueueDeclare{Queue: q2, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { f.c.QueueDelete(ops.QueueDelete{Queue: q2}).Wait(context.Background()) })
	_, err = f.c.Publish(ctx, ops.Publish{RoutingKey: q2, Message: ops.Message{Body: []byte("to amqp091-go")}}).Wait(ctx)
	require.NoError(t, err)
	msg, ok, err := ch.Get(q2, true)
	require.NoError(t, err)
	require.True(t, ok)
	got := trace.SpanContextFromContext(prop.Extract(context.Background(), amqpCarrier(msg.Headers)))
	pub := f.ended(t, trace.SpanKindProducer, 1)[0]
	require.Equal(t, pub.SpanContext().TraceID(), got.TraceID())
	require.Equal(t, pub.SpanContext().SpanID(), got.SpanID())
}

type amqpCarrier amqp.Table

func (c amqpCarrier) Get(k string) string { s, _ := c[k].(string); return s }
func (c amqpCarrier) Set(k, v string)     { c[k] = v }
func (c amqpCarrier) Keys() []string {
	var ks []string
	for k := range c {
		ks = append(ks, k)
	}
	return ks
}

// The metrics count what was sent and received: 20 confirmed client-level
// publishes and one returned, 10 confirmed publishes on an explicit channel,
// 20 deliveries of which 15 acked (5 of them by one multiple ack) and 5
// nacked, and a confirm latency per client-level publish.
func TestMetricsCountWhatWasSent(t *testing.T) {
	f, ctx := setup(t)
	for i := range 20 {
		_, err := f.c.Publish(ctx, ops.Publish{RoutingKey: f.q, Message: ops.Message{Body: fmt.Appendf(nil, "%d", i)}}).Wait(ctx)
		require.NoError(t, err)
	}
	_, err := f.c.Publish(ctx, ops.Publish{RoutingKey: "otelleveret.nowhere", Mandatory: true, Message: ops.Message{Body: []byte("x")}}).Wait(ctx)
	require.Error(t, err)

	ch, err := f.c.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.ConfirmSelect().Wait(ctx)
	require.NoError(t, err)
	q2 := f.q + ".explicit"
	_, err = f.c.QueueDeclare(ops.QueueDeclare{Queue: q2, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { f.c.QueueDelete(ops.QueueDelete{Queue: q2}).Wait(context.Background()) })
	for range 10 {
		require.NoError(t, ch.Send(ctx, ops.Publish{RoutingKey: q2, Message: ops.Message{Body: []byte("e")}}))
	}

	cch, err := f.c.Channel(ctx)
	require.NoError(t, err)
	cs, err := cch.Consume(ops.Consume{Queue: f.q, Prefetch: 20}).Wait(ctx)
	require.NoError(t, err)
	var ds []*leveret.Delivery
	for range 20 {
		ds = append(ds, <-cs.Deliveries())
	}
	_, err = cch.Ack(ops.Ack{DeliveryTag: ds[4].DeliveryTag, Multiple: true}).Wait(ctx) // 5 at once
	require.NoError(t, err)
	for _, d := range ds[5:15] {
		_, err = d.Ack().Wait(ctx)
		require.NoError(t, err)
	}
	for _, d := range ds[15:] {
		_, err = d.Nack(ops.Nack{Requeue: false}).Wait(ctx)
		require.NoError(t, err)
	}

	want := map[string]int64{"leveret.published": 31, "leveret.confirmed": 30, "leveret.returned": 1,
		"leveret.delivered": 20, "leveret.acked": 15, "leveret.rejected": 5}
	var got map[string]int64
	var latencies uint64
	require.Eventually(t, func() bool {
		var rm metricdata.ResourceMetrics
		require.NoError(t, f.reader.Collect(ctx, &rm))
		got, latencies = map[string]int64{}, 0
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				switch data := m.Data.(type) {
				case metricdata.Sum[int64]:
					for _, dp := range data.DataPoints {
						got[m.Name] += dp.Value
					}
				case metricdata.Histogram[float64]:
					for _, dp := range data.DataPoints {
						latencies += dp.Count
					}
				}
			}
		}
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return latencies == 21
	}, 10*time.Second, 10*time.Millisecond, "metrics")
	require.Zero(t, got["leveret.nacked"])
	require.Zero(t, got["leveret.publish.failed"])
	// Every delivery's process span ended: by the multiple ack, by its own ack or nack.
	require.Len(t, f.ended(t, trace.SpanKindConsumer, 20), 20)
}
