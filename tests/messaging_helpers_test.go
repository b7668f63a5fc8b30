package tests

// Helpers for the messaging tests (publish_test.go, consume_test.go,
// interop_test.go). Every name starts with "msg" so that they cannot clash
// with the shared helpers in helpers_test.go.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// msgTimeout bounds each messaging test: generous, so that a slow or loaded
// machine (-race) does not fail a test, while a hang still ends.
const msgTimeout = 60 * time.Second

// msgURL is the broker's URL ($AMQP_URL, else the local test broker).
func msgURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// msgCtx returns a context that ends after msgTimeout or when the test ends.
func msgCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	t.Cleanup(cancel)
	return ctx
}

// msgDial connects a leveret client and closes it when the test ends.
// Closing a client the test already closed is fine (Close is idempotent).
func msgDial(t *testing.T, opts ...leveret.Option) *leveret.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	defer cancel()
	c, err := leveret.Dial(ctx, msgURL(), opts...)
	require.NoError(t, err, "leveret dial")
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
		defer cancel()
		err := c.Close(cctx)
		if err != nil && !errors.Is(err, leveret.ErrClosed) {
			assert.NoError(t, err, "closing the test's client")
		}
	})
	return c
}

// msgChannel opens an explicit channel on c.
func msgChannel(t *testing.T, c *leveret.Client) *leveret.Channel {
	t.Helper()
	ch, err := c.Channel(msgCtx(t))
	require.NoError(t, err, "open channel")
	return ch
}

var msgUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// msgName is a queue or exchange name unique to the test and the run.
func msgName(t *testing.T, what string) string {
	return fmt.Sprintf("leveret-msg.%s.%s.%08x", msgUnsafe.ReplaceAllString(t.Name(), "_"), what, rand.Uint32())
}

// msgQueue declares a fresh queue with c and deletes it when the test ends,
// on a connection of its own so that it works whatever the test did to c.
func msgQueue(t *testing.T, c *leveret.Client) string {
	t.Helper()
	q := msgName(t, "q")
	msgCleanup(t, []string{q}, nil)
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(msgCtx(t))
	require.NoError(t, err, "declare queue %s", q)
	return q
}

// msgCleanup deletes queues and exchanges when the test ends.
func msgCleanup(t *testing.T, queues, exchanges []string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
		defer cancel()
		c, err := leveret.Dial(ctx, msgURL())
		if !assert.NoError(t, err, "dial for cleanup") {
			return
		}
		defer func() { assert.NoError(t, c.Close(ctx), "close after cleanup") }()
		var ws []leveret.Waiter
		for _, q := range queues {
			ws = append(ws, c.QueueDelete(ops.QueueDelete{Queue: q}))
		}
		for _, x := range exchanges {
			ws = append(ws, c.ExchangeDelete(ops.ExchangeDelete{Exchange: x}))
		}
		assert.NoError(t, leveret.WaitAll(ctx, ws...), "cleanup deletes")
	})
}

// msgDepth returns the number of ready messages in q (passive declare).
func msgDepth(t *testing.T, c *leveret.Client, q string) uint32 {
	t.Helper()
	ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}).Wait(msgCtx(t))
	require.NoError(t, err, "passive declare %s", q)
	return ok.MessageCount
}

// msgWaitDepth polls until q holds n ready messages. The broker counts a
// message as ready a moment after the publish has been written.
func msgWaitDepth(t *testing.T, c *leveret.Client, q string, n uint32) {
	t.Helper()
	ctx := msgCtx(t)
	for {
		got := msgDepth(t, c, q)
		if got == n {
			return
		}
		select {
		case <-ctx.Done():
			require.Failf(t, "queue depth", "queue %s holds %d messages, want %d", q, got, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// msgPublishN publishes n messages "<prefix>0".."<prefix>n-1" to q with c
// and waits until they have been written.
func msgPublishN(t *testing.T, c *leveret.Client, q, prefix string, n int) {
	t.Helper()
	ctx := msgCtx(t)
	ws := make([]leveret.Waiter, 0, n)
	for i := range n {
		ws = append(ws, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: fmt.Appendf(nil, "%s%d", prefix, i)}}))
	}
	require.NoError(t, leveret.WaitAll(ctx, ws...), "publish %d messages to %s", n, q)
}

// msgConsume starts a consumer with c.Consume and waits for consume-ok.
func msgConsume(t *testing.T, c *leveret.Client, o ops.Consume) *leveret.Consumer {
	t.Helper()
	cs, err := c.Consume(o).Wait(msgCtx(t))
	require.NoError(t, err, "consume %s", o.Queue)
	return cs
}

// msgNext returns the consumer's next delivery, failing the test if the
// stream ends or ctx runs out first.
func msgNext(t *testing.T, ctx context.Context, cs *leveret.Consumer) *leveret.Delivery {
	t.Helper()
	select {
	case d, ok := <-cs.Deliveries():
		require.True(t, ok, "deliveries closed early: %v", cs.Err())
		return d
	case <-ctx.Done():
		require.FailNow(t, "no delivery before the context ended")
		return nil
	}
}

// msgEnded waits until the consumer's Deliveries channel is closed,
// discarding anything still buffered, then until Done, and returns Err.
// (Err right after Deliveries closes is TestConsumeErrWhenDeliveriesClose's
// subject.)
func msgEnded(t *testing.T, ctx context.Context, cs *leveret.Consumer) error {
	t.Helper()
	for {
		select {
		case _, ok := <-cs.Deliveries():
			if !ok {
				select {
				case <-cs.Done():
				case <-ctx.Done():
					require.FailNow(t, "Deliveries closed but Done never did")
				}
				return cs.Err()
			}
		case <-ctx.Done():
			require.FailNow(t, "consumer did not end before the context ended")
			return nil
		}
	}
}

// msgGet fetches one message from q on c's pool and requires one.
func msgGet(t *testing.T, c *leveret.Client, q string, noAck bool) *leveret.Delivery {
	t.Helper()
	g, err := c.Get(ops.Get{Queue: q, NoAck: noAck}).Wait(msgCtx(t))
	require.NoError(t, err, "get from %s", q)
	require.False(t, g.Empty(), "queue %s is empty", q)
	return g.Delivery
}

// msgChanGet is msgGet on an explicit channel.
func msgChanGet(t *testing.T, ch *leveret.Channel, q string) *leveret.Delivery {
	t.Helper()
	g, err := ch.Get(ops.Get{Queue: q}).Wait(msgCtx(t))
	require.NoError(t, err, "get from %s", q)
	require.False(t, g.Empty(), "queue %s is empty", q)
	return g.Delivery
}

// msgDial091 connects with amqp091-go, the interop peer, and opens a
// channel; both close when the test ends.
func msgDial091(t *testing.T) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(msgURL())
	require.NoError(t, err, "amqp091-go dial")
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err, "amqp091-go channel")
	return conn, ch
}

// msgOK waits for p and requires success.
func msgOK[T any](t *testing.T, ctx context.Context, p *leveret.Promise[T], what string) T {
	t.Helper()
	v, err := p.Wait(ctx)
	require.NoError(t, err, what)
	return v
}
