package netfaults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

const opTimeout = 30 * time.Second

func brokerAddr() string {
	if a := os.Getenv("AMQP_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:5672"
}

// leakCheck fails t if goroutines are left once every cleanup (the
// proxy's stop included) has run.
// toxiproxy's own toxic goroutines can outlive Proxy.Stop; they are not
// leveret's.
func leakCheck(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
			goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
			goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"))
	})
}

// proxy starts an in-process toxiproxy in front of the broker and returns
// it with the URL that goes through it.
func proxy(t *testing.T) (*toxiproxy.Proxy, string) {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", brokerAddr())
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	return p, "amqp://guest:guest@" + p.Listen + "/%2f"
}

func addToxic(t *testing.T, p *toxiproxy.Proxy, spec string) {
	t.Helper()
	_, err := p.Toxics.AddToxicJson(strings.NewReader(spec))
	require.NoError(t, err)
}

// setup checks for leaks, starts a proxy, dials through it with opts
// (closed at cleanup) and declares a queue (deleted at cleanup).
func setup(t *testing.T, opts ...leveret.Option) (context.Context, *toxiproxy.Proxy, *leveret.Client, *events, string) {
	t.Helper()
	leakCheck(t)
	p, url := proxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
	t.Cleanup(cancel)
	ev := &events{}
	c, err := leveret.Dial(ctx, url, append(opts, leveret.WithEventHandler(ev.handle))...)
	require.NoError(t, err)
	queue := fmt.Sprintf("netfaults.%s.%d", t.Name(), time.Now().UnixNano())
	t.Cleanup(func() {
		c.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(ctx)
		require.NoError(t, c.Close(context.Background()))
	})
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: queue}).Wait(ctx)
	require.NoError(t, err)
	return ctx, p, c, ev, queue
}

// events records a client's connection events with their arrival times.
type events struct {
	mu   sync.Mutex
	list []leveret.Event
	at   []time.Time
}

func (e *events) handle(ev leveret.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.at = append(e.at, time.Now())
	e.mu.Unlock()
}

// wait waits for the n-th event of kind and returns it and when it came.
func (e *events) wait(t *testing.T, kind leveret.EventKind, n int) (leveret.Event, time.Time) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		seen := 0
		for i, ev := range e.list {
			if ev.Kind == kind {
				if seen++; seen == n {
					at := e.at[i]
					e.mu.Unlock()
					return ev, at
				}
			}
		}
		e.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %v event %d within %v", kind, n, opTimeout)
	return leveret.Event{}, time.Time{}
}

// A black hole (toxiproxy "timeout" with no limit: the link stays up and
// carries nothing) is detected by heartbeats within two intervals; the
// client keeps trying through the hole (each attempt bounded by the
// connection timeout) and recovers once the link carries data again.
func TestBlackHoleDetectedAndRecovered(t *testing.T) {
	const heartbeat = 2 * time.Second
	ctx, p, c, ev, queue := setup(t, leveret.WithHeartbeat(heartbeat), leveret.WithConnectionTimeout(time.Second))

	holeAt := time.Now()
	addToxic(t, p, `{"name":"hole","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	addToxic(t, p, `{"name":"hole_up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	disc, discAt := ev.wait(t, leveret.EventDisconnected, 1)
	detected := discAt.Sub(holeAt)
	t.Logf("black hole detected after %v (heartbeat %v): %v", detected, heartbeat, disc.Err)
	require.ErrorIs(t, disc.Err, leveret.ErrHeartbeatTimeout)
	require.Less(t, detected, 2*heartbeat+time.Second, "not detected within two heartbeat intervals")

	// A publish issued during the outage waits (Publish blocks under its
	// ctx) for the next connection; a declare is parked and re-sent.
	published := make(chan error, 1)
	go func() { // owner: this test; exits when the publish has settled
		_, err := c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("during")}}).Wait(ctx)
		published <- err
	}()
	declare := c.QueueDeclare(ops.QueueDeclare{Queue: queue})
	time.Sleep(2 * time.Second) // a few attempts fail inside the hole
	require.Equal(t, leveret.StateReconnecting, c.State())
	require.NoError(t, p.Toxics.RemoveToxic(ctx, "hole"))
	require.NoError(t, p.Toxics.RemoveToxic(ctx, "hole_up"))
	ev.wait(t, leveret.EventRecovered, 1)
	require.NoError(t, <-published)
	_, err := declare.Wait(ctx)
	require.NoError(t, err)
	r, err := c.Get(ops.Get{Queue: queue, NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	require.False(t, r.Empty())
	require.Equal(t, "during", string(r.Delivery.Body))
}

// The connection is cut in the middle of a frame (toxiproxy limit_data
// while 64 KiB deliveries stream in): the client sees a truncated read,
// reconnects, and the consumer gets every message on the same Deliveries
// channel (the unacked ones redelivered).
func TestResetMidFrameRecovered(t *testing.T) {
	ctx, p, c, ev, queue := setup(t)
	const total = 60
	body := make([]byte, 64<<10)
	var ps []*leveret.Promise[struct{}]
	for i := range total {
		copy(body, strconv.Itoa(i)+"|")
		ps = append(ps, c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: body}}))
	}
	_, err := leveret.Collect(ctx, ps)
	require.NoError(t, err)

	// Cut the broker-to-client stream 1.5 MiB from now: inside the 24th
	// or so delivery's body frames.
	addToxic(t, p, `{"name":"cut","type":"limit_data","stream":"downstream","attributes":{"bytes":1572864}}`)
	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: 5}).Wait(ctx)
	require.NoError(t, err)
	seen := make(map[int]bool)
	removed := false
	for len(seen) < total {
		select {
		case d, ok := <-cs.Deliveries():
			require.True(t, ok, "consumer ended: %v", cs.Err())
			id, _ := strconv.Atoi(strings.SplitN(string(d.Body[:16]), "|", 2)[0])
			require.Len(t, d.Body, len(body), "a truncated body was delivered")
			if _, err := d.Ack().Wait(ctx); err == nil {
				seen[id] = true
			} else {
				require.True(t, errors.Is(err, leveret.ErrStaleDelivery), "ack: %v", err)
			}
		case <-ctx.Done():
			t.Fatalf("got %d of %d", len(seen), total)
		}
		if !removed && len(ev.kinds()) > 0 {
			if _, ok := ev.find(leveret.EventDisconnected); ok {
				// Let the next connection through whole.
				require.NoError(t, p.Toxics.RemoveToxic(ctx, "cut"))
				removed = true
			}
		}
	}
	disc, _ := ev.wait(t, leveret.EventDisconnected, 1)
	t.Logf("cut mid-frame: %v; %d messages all received", disc.Err, total)
	require.True(t, removed)
}

func (e *events) kinds() []leveret.EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []leveret.EventKind
	for _, ev := range e.list {
		out = append(out, ev.Kind)
	}
	return out
}

func (e *events) find(kind leveret.EventKind) (leveret.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.list {
		if ev.Kind == kind {
			return ev, true
		}
	}
	return leveret.Event{}, false
}
