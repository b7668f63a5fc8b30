package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/leveret-mq/leveret/ops"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// latencyProxy is an in-process toxiproxy listening on a loopback port and
// forwarding to the broker with a latency toxic in each direction.
type latencyProxy struct {
	addr  string
	proxy *toxiproxy.Proxy
}

func startLatencyProxy(upstream string, ms int) (*latencyProxy, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, fmt.Sprintf("amqp-%dms", ms), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, err
	}
	for _, stream := range []string{"upstream", "downstream"} {
		spec := fmt.Sprintf(`{"name":"latency_%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`, stream, stream, ms)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			p.Stop()
			return nil, fmt.Errorf("add %s latency toxic: %w", stream, err)
		}
	}
	return &latencyProxy{addr: p.Listen, proxy: p}, nil
}

func (l *latencyProxy) stop() { l.proxy.Stop() }

// roundTrip measures what a synchronous call costs through url: the median
// of 21 passive declares of an existing queue, one at a time on a fresh
// leveret channel. It shows what "+N ms each way" means once the proxy's
// own overhead is added.
func roundTrip(ctx context.Context, url, queue string) (time.Duration, error) {
	c, closeC, err := dialLeveret(ctx, url)
	if err != nil {
		return 0, err
	}
	defer closeC()
	ch, err := c.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close(ctx)
	var ts []float64
	for range 21 {
		t0 := time.Now()
		if _, err := ch.QueueDeclare(ops.QueueDeclare{Queue: queue, Passive: true}).Wait(ctx); err != nil {
			return 0, err
		}
		ts = append(ts, float64(time.Since(t0)))
	}
	return time.Duration(median(ts)), nil
}
