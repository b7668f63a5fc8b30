// Package otelleveret traces and measures a leveret Client with
// OpenTelemetry. New returns a leveret.Hook; give it to leveret.Dial with
// leveret.WithHooks:
//
//	h, err := otelleveret.New()
//	c, err := leveret.Dial(ctx, url, leveret.WithHooks(h))
//
// Spans follow the OpenTelemetry messaging semantic conventions for
// RabbitMQ: a producer span per publish ("publish <exchange>"), ended by the
// broker's confirmation for Client.Publish and when the message is queued
// for the socket on an explicit channel, and a consumer span per delivery
// ("process <queue>"), started before the delivery is handed over and
// ended by its ack, nack or reject (at once for a NoAck consumer). The
// publisher's trace context travels in the message headers as W3C
// traceparent/tracestate (the propagator is configurable), so a consumer's
// span is the child of, and linked to, the publisher's, also across
// services using amqp091-go with the same headers. Process a delivery
// under d.Context() to parent your own spans on it.
//
// Metrics: counters leveret.published, leveret.confirmed, leveret.nacked,
// leveret.returned, leveret.publish.failed, leveret.delivered,
// leveret.acked, leveret.rejected (nacks and rejects, with the kind),
// leveret.reconnects, and the histogram leveret.publish.confirm.duration
// (seconds from Client.Publish to the broker's answer).
package otelleveret

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// scope is the instrumentation scope name of the tracer and meter.
const scope = "github.com/leveret-mq/leveret/otelleveret"

// Option configures New.
type Option func(*config)

type config struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	prop propagation.TextMapPropagator
}

// WithTracerProvider sets the tracer provider; default otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider sets the meter provider; default otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithPropagator sets how trace context is written to and read from
// message headers; default W3C trace context and baggage.
func WithPropagator(p propagation.TextMapPropagator) Option { return func(c *config) { c.prop = p } }

// Hook is the leveret.Hook that New returns. It is safe for concurrent
// use; one Hook may serve several clients.
type Hook struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	m      instruments

	mu   sync.Mutex
	open map[*leveret.Channel]map[uint64]trace.Span // process spans awaiting their ack, by channel and tag
}

type startKey struct{}

// New makes the hook. It fails only if an instrument cannot be created.
func New(opts ...Option) (*Hook, error) {
	cfg := config{tp: otel.GetTracerProvider(), mp: otel.GetMeterProvider(),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := newInstruments(cfg.mp.Meter(scope))
	if err != nil {
		return nil, err
	}
	return &Hook{tracer: cfg.tp.Tracer(scope), prop: cfg.prop, m: m, open: map[*leveret.Channel]map[uint64]trace.Span{}}, nil
}

// OnPublish starts the producer span and writes its context into the
// message headers.
func (h *Hook) OnPublish(ctx context.Context, p *leveret.PublishInfo) context.Context {
	name := "publish"
	if p.Exchange != "" {
		name += " " + p.Exchange
	}
	attrs := append(commonAttrs(p.Exchange, p.RoutingKey),
		semconv.MessagingOperationName("publish"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingMessageBodySize(len(p.Message.Body)))
	if p.Message.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(p.Message.MessageID))
	}
	ctx, _ = h.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if p.Message.Headers == nil {
		p.Message.Headers = ops.Table{}
	}
	h.prop.Inject(ctx, headerCarrier(p.Message.Headers))
	h.m.published.Add(ctx, 1, metric.WithAttributes(semconv.MessagingDestinationName(p.Exchange)))
	return context.WithValue(ctx, startKey{}, time.Now())
}

// OnPublishDone ends the producer span with the publish's outcome.
func (h *Hook) OnPublishDone(ctx context.Context, p *leveret.PublishInfo, err error) {
	span := trace.SpanFromContext(ctx)
	dest := metric.WithAttributes(semconv.MessagingDestinationName(p.Exchange))
	var ret *leveret.ReturnedError
	switch {
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
		switch {
		case errors.As(err, &ret):
			h.m.returned.Add(ctx, 1, dest)
		case errors.Is(err, leveret.ErrNacked):
			h.m.nacked.Add(ctx, 1, dest)
		default:
			h.m.failed.Add(ctx, 1, dest)
		}
	case p.Confirmed:
		h.m.confirmed.Add(ctx, 1, dest)
	}
	if start, ok := ctx.Value(startKey{}).(time.Time); ok && p.Confirmed {
		h.m.confirmLatency.Record(ctx, time.Since(start).Seconds(), dest)
	}
	span.End()
}

// OnConfirm counts an explicit channel's confirmations.
func (h *Hook) OnConfirm(_ *leveret.Channel, cf leveret.Confirmation, count int) {
	if cf.Ack {
		h.m.confirmed.Add(context.Background(), int64(count))
	} else {
		h.m.nacked.Add(context.Background(), int64(count))
	}
}

// OnReturn counts an explicit channel's returned messages.
func (h *Hook) OnReturn(_ *leveret.Channel, r ops.Return) {
	h.m.returned.Add(context.Background(), 1, metric.WithAttributes(semconv.MessagingDestinationName(r.Exchange)))
}

// OnDelivery starts the consumer span, a child of (and linked to) the
// publisher's span when the headers carry its context.
func (h *Hook) OnDelivery(info leveret.DeliveryInfo) context.Context {
	d := info.Delivery
	parent := h.prop.Extract(context.Background(), headerCarrier(d.Headers))
	attrs := append(commonAttrs(d.Exchange, d.RoutingKey),
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationSubscriptionName(info.Queue),
		semconv.MessagingMessageBodySize(len(d.Body)),
		semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)))
	if d.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(d.MessageID))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	ctx, span := h.tracer.Start(parent, "process "+info.Queue, opts...)
	h.m.delivered.Add(ctx, 1, metric.WithAttributes(semconv.MessagingDestinationSubscriptionName(info.Queue)))
	if info.AutoAck {
		span.End() // nothing settles it: the span covers the hand-over
		return ctx
	}
	h.mu.Lock()
	byTag := h.open[d.Channel()]
	if byTag == nil {
		byTag = map[uint64]trace.Span{}
		h.open[d.Channel()] = byTag
	}
	byTag[d.DeliveryTag] = span
	h.mu.Unlock()
	return ctx
}

// OnSettle ends the consumer spans an ack, nack or reject settled and
// counts them.
func (h *Hook) OnSettle(ctx context.Context, s leveret.Settlement) {
	if s.Err != nil || s.Count == 0 {
		return // nothing was sent: the span stays open for a later settlement, or ends with the connection
	}
	switch s.Kind {
	case leveret.SettleAck:
		h.m.acked.Add(ctx, int64(s.Count))
	default:
		h.m.rejected.Add(ctx, int64(s.Count), metric.WithAttributes(attribute.String("leveret.settle", s.Kind.String()),
			attribute.Bool("leveret.requeue", s.Requeue)))
	}
	for _, span := range h.take(s.Channel, s.DeliveryTag, s.Multiple) {
		span.SetAttributes(attribute.String("leveret.settle", s.Kind.String()))
		span.End()
	}
}

// take removes and returns the open spans a settlement ends.
func (h *Hook) take(ch *leveret.Channel, tag uint64, multiple bool) []trace.Span {
	h.mu.Lock()
	defer h.mu.Unlock()
	byTag := h.open[ch]
	var spans []trace.Span
	if !multiple {
		if span, ok := byTag[tag]; ok {
			delete(byTag, tag)
			spans = append(spans, span)
		}
	} else {
		for t, span := range byTag {
			if tag == 0 || t <= tag {
				delete(byTag, t)
				spans = append(spans, span)
			}
		}
	}
	if len(byTag) == 0 {
		delete(h.open, ch)
	}
	return spans
}

// OnConnectionEvent counts reconnects and ends the spans of deliveries the
// lost connection took with it (the broker requeues them).
func (h *Hook) OnConnectionEvent(e leveret.Event) {
	switch e.Kind {
	case leveret.EventReconnecting:
		h.m.reconnects.Add(context.Background(), 1)
	case leveret.EventDisconnected, leveret.EventClosed:
		h.mu.Lock()
		open := h.open
		h.open = map[*leveret.Channel]map[uint64]trace.Span{}
		h.mu.Unlock()
		for _, byTag := range open {
			for _, span := range byTag {
				span.SetStatus(codes.Error, "connection lost before the delivery was settled")
				span.End()
			}
		}
	}
}

func commonAttrs(exchange, routingKey string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.MessagingSystemRabbitMQ, semconv.MessagingDestinationName(exchange)}
	if routingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(routingKey))
	}
	return attrs
}

// errorType is a low-cardinality class of a publish's failure.
func errorType(err error) string {
	var ret *leveret.ReturnedError
	var ce *leveret.ChannelError
	switch {
	case errors.As(err, &ret):
		return "returned"
	case errors.Is(err, leveret.ErrNacked):
		return "nacked"
	case errors.As(err, &ce):
		return "channel-error"
	case errors.Is(err, leveret.ErrNotConfirmed):
		return "not-confirmed"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "context"
	}
	return "other"
}
