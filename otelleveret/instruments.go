package otelleveret

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/metric"

	"github.com/leveret-mq/leveret/ops"
)

// instruments are the hook's metrics (see the package doc).
type instruments struct {
	published, confirmed, nacked, returned, failed metric.Int64Counter
	delivered, acked, rejected, reconnects         metric.Int64Counter
	confirmLatency                                 metric.Float64Histogram
}

func newInstruments(m metric.Meter) (instruments, error) {
	var in instruments
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		errs = append(errs, err)
		return c
	}
	in.published = counter("leveret.published", "Messages published (Client.Publish, Channel.Publish, Channel.Send)")
	in.confirmed = counter("leveret.confirmed", "Publishes the broker confirmed (acked)")
	in.nacked = counter("leveret.nacked", "Publishes the broker nacked")
	in.returned = counter("leveret.returned", "Mandatory publishes the broker returned as unroutable")
	in.failed = counter("leveret.publish.failed", "Client.Publish calls that failed otherwise (channel error, not confirmed, context)")
	in.delivered = counter("leveret.delivered", "Deliveries handed to consumers")
	in.acked = counter("leveret.acked", "Deliveries acked")
	in.rejected = counter("leveret.rejected", "Deliveries nacked or rejected")
	var err error
	in.reconnects, err = m.Int64Counter("leveret.reconnects", metric.WithDescription("Reconnect attempts after a dropped connection"), metric.WithUnit("{attempt}"))
	errs = append(errs, err)
	in.confirmLatency, err = m.Float64Histogram("leveret.publish.confirm.duration",
		metric.WithDescription("Time from Client.Publish to the broker's answer"), metric.WithUnit("s"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return in, fmt.Errorf("otelleveret: creating instruments: %w", err)
	}
	return in, nil
}

// headerCarrier reads and writes trace context in AMQP headers. Values are
// written as strings; strings and byte arrays are read (amqp091-go peers
// may send either).
type headerCarrier ops.Table

func (c headerCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = value }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
