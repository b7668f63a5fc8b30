package tests

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

// Acceptance tests of the confirm package: outcomes (acked, nacked,
// returned, failed), ranges settled by multiple acks, the window, and
// failures of the channel and of the connection.

// cfQueue declares a queue for the test (deleted when the test ends) and
// returns its name.
func cfQueue(t *testing.T, c *leveret.Client, args ops.Table) string {
	t.Helper()
	q := uniqueName(t, "q")
	deleteAtEnd(t, []string{q}, nil)
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true, Args: args}).Wait(testContext(t))
	require.NoError(t, err)
	return q
}

// cfPublisher opens a confirming publisher, closed when the test ends.
func cfPublisher(t *testing.T, c *leveret.Client, opts ...confirm.Option) *confirm.Publisher {
	t.Helper()
	p, err := confirm.New(testContext(t), c, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		p.Close(cctx)
	})
	return p
}

// cfWaitCount polls the queue's ready-message count (passive declare) for
// up to 10 s until it is want, and returns the last count seen.
func cfWaitCount(t *testing.T, c *leveret.Client, q string, want uint32) uint32 {
	t.Helper()
	ctx := testContext(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}).Wait(ctx)
		require.NoError(t, err)
		if ok.MessageCount == want || time.Now().After(deadline) {
			return ok.MessageCount
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cfMsg is a message to q through the default exchange with an id.
func cfMsg(q string, id int, body []byte) ops.Publish {
	return ops.Publish{RoutingKey: q, Message: ops.Message{MessageID: fmt.Sprint(id), Body: body}}
}

// 200,000 confirmed publishes through a window of 1,000 all settle as
// acked, the window is never exceeded, and the queue holds every message.
func TestConfirm200kWindow1000(t *testing.T) {
	const n, window = 200_000, 1000
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	p := cfPublisher(t, c, confirm.WithWindow(window))

	body := make([]byte, 100)
	ps := make([]*leveret.Promise[confirm.Outcome], n)
	maxInFlight := 0
	start := time.Now()
	for i := range ps {
		ps[i] = p.Publish(ctx, cfMsg(q, i, body))
		if i%1000 == 0 {
			maxInFlight = max(maxInFlight, p.InFlight())
		}
	}
	require.NoError(t, p.Flush(ctx))
	elapsed := time.Since(start)
	for i, pr := range ps {
		requireSettledNow(t, pr, fmt.Sprintf("publish %d after Flush", i))
		o, err := pr.Wait(ctx)
		require.NoError(t, err, "publish %d", i)
		require.Equal(t, confirm.Acked, o.Status, "publish %d", i)
	}
	assert.Zero(t, p.InFlight())
	assert.LessOrEqual(t, maxInFlight, window)
	t.Logf("%d confirmed publishes in %v (%.0f msg/s), largest in-flight count seen %d",
		n, elapsed, n/elapsed.Seconds(), maxInFlight)
	assert.Equal(t, uint32(n), cfWaitCount(t, c, q, n))
}

// A mandatory publish that routes nowhere is reported as returned, linked
// to its own publish, while the publishes around it are acked.
func TestConfirmReturnedLinkedToItsPublish(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	x := uniqueName(t, "unbound")
	deleteAtEnd(t, nil, []string{x})
	_, err := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: x}).Wait(ctx)
	require.NoError(t, err)
	p := cfPublisher(t, c)

	const n = 2000
	unroutable := func(i int) bool { return i%97 == 13 }
	ps := make([]*leveret.Promise[confirm.Outcome], n)
	returned := 0
	for i := range ps {
		o := cfMsg(q, i, []byte("x"))
		o.Mandatory = true
		if unroutable(i) {
			o.Exchange, o.RoutingKey = x, "nowhere"
			returned++
		}
		ps[i] = p.Publish(ctx, o)
	}
	for i, pr := range ps {
		o, err := pr.Wait(ctx)
		require.NoError(t, err, "publish %d", i)
		if !unroutable(i) {
			require.Equal(t, confirm.Acked, o.Status, "publish %d: %v", i, o)
			require.Nil(t, o.Return)
			continue
		}
		require.Equal(t, confirm.Returned, o.Status, "publish %d", i)
		require.Equal(t, "returned", o.Status.String())
		require.NotNil(t, o.Return)
		assert.Equal(t, ops.ReplyCode(312), o.Return.ReplyCode)
		assert.Equal(t, x, o.Return.Exchange)
		assert.Equal(t, fmt.Sprint(i), o.Return.Message.MessageID, "the return belongs to this publish")
		assert.NotContains(t, o.Return.Message.Headers, confirm.SeqHeader)
	}
	assert.Equal(t, uint32(n-returned), cfWaitCount(t, c, q, uint32(n-returned)))

	// The simple case, one call.
	o, err := p.PublishSync(ctx, ops.Publish{Exchange: x, RoutingKey: "nowhere", Mandatory: true})
	require.NoError(t, err)
	assert.Equal(t, confirm.Returned, o.Status)
	o, err = p.PublishSync(ctx, cfMsg(q, n, nil))
	require.NoError(t, err)
	assert.Equal(t, confirm.Acked, o.Status)
}

// A publish to a missing exchange closes the channel with 404: its promise
// and those behind it fail with the channel error, none is acked, and
// publishes issued afterwards are refused at once with the cause.
func TestConfirmMissingExchangeFailsRest(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	p := cfPublisher(t, c, confirm.WithWindow(100))

	const before, behind = 50, 50
	var ps []*leveret.Promise[confirm.Outcome]
	for i := range before {
		ps = append(ps, p.Publish(ctx, cfMsg(q, i, nil)))
	}
	missing := len(ps)
	ps = append(ps, p.Publish(ctx, ops.Publish{Exchange: uniqueName(t, "missing"), RoutingKey: q}))
	for i := range behind {
		ps = append(ps, p.Publish(ctx, cfMsg(q, before+1+i, nil)))
	}

	ackedBefore := 0
	for i, pr := range ps {
		o, err := pr.Wait(ctx)
		if i < missing && err == nil {
			require.Equal(t, confirm.Acked, o.Status, "publish %d", i)
			ackedBefore++
			continue
		}
		require.Error(t, err, "publish %d must not succeed", i)
		var ce *leveret.ChannelError
		require.ErrorAs(t, err, &ce, "publish %d", i)
		assert.Equal(t, leveret.ReplyCode(404), ce.Code)
		require.ErrorIs(t, err, leveret.ErrNotFound)
		if i < missing {
			continue // issued before the failing one, but not confirmed before the channel ended
		}
		// Either in flight when the channel ended, or refused at once
		// because the channel had already ended.
		if !errors.Is(err, confirm.ErrNotConfirmed) {
			t.Logf("publish %d was refused at once: %v", i, err)
		}
	}
	t.Logf("%d of the %d publishes in front of the failing one were acked", ackedBefore, before)

	late := p.Publish(ctx, cfMsg(q, 0, nil))
	requireSettledNow(t, late, "publish after the channel failed")
	require.ErrorIs(t, late.Err(), leveret.ErrNotFound)
	assert.NotErrorIs(t, late.Err(), confirm.ErrNotConfirmed, "refused, not in doubt")
	require.ErrorIs(t, p.Err(), leveret.ErrNotFound)
	assert.ErrorIs(t, p.Flush(ctx), leveret.ErrNotFound)
	assert.Zero(t, p.InFlight())
}

// A queue that refuses publishes when full makes the broker nack: the
// outcome says nacked, and it is not an error.
func TestConfirmNack(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, ops.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	p := cfPublisher(t, c)

	first, err := p.PublishSync(ctx, cfMsg(q, 1, nil))
	require.NoError(t, err)
	assert.Equal(t, confirm.Acked, first.Status)
	second, err := p.PublishSync(ctx, cfMsg(q, 2, nil))
	require.NoError(t, err)
	assert.Equal(t, confirm.Nacked, second.Status)
	assert.Equal(t, "nacked", second.String())

	// A burst: exactly none acked past the limit.
	ps := make([]*leveret.Promise[confirm.Outcome], 100)
	for i := range ps {
		ps[i] = p.Publish(ctx, cfMsg(q, 3+i, nil))
	}
	outs, err := leveret.Collect(ctx, ps)
	require.NoError(t, err)
	for i, o := range outs {
		assert.Equal(t, confirm.Nacked, o.Status, "publish %d", i)
	}
	require.NoError(t, p.Err(), "nacks do not close the channel")
	assert.Equal(t, uint32(1), cfWaitCount(t, c, q, 1))
}

// With reconnecting off, closing the connection from the broker while
// publishes are in flight fails every unsettled promise with the
// connection error; none hangs, none is acked after the fact, and every
// goroutine is joined. (With reconnecting on, see TestRecoveryConfirmRepublish.)
//
// Whether publishes are still unconfirmed at the moment of the close is up
// to timing (on a busy 2-core machine the publishing goroutine can be
// descheduled while the broker confirms everything it has): an attempt in
// which none was is still checked, and repeated, up to 5 times.
func TestConfirmConnectionClosedMidStream(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	for attempt := 1; ; attempt++ {
		inDoubt := cfCloseMidStream(t)
		if inDoubt > 0 {
			break
		}
		require.Less(t, attempt, 5, "no publish was in flight when the broker closed the connection, %d times", attempt)
	}
	goleak.VerifyNone(t, ignore)
}

// cfCloseMidStream runs one attempt of TestConfirmConnectionClosedMidStream
// on a connection of its own, closed before it returns, and returns how
// many publishes failed in flight (ErrNotConfirmed).
func cfCloseMidStream(t *testing.T) (inDoubt int) {
	ctx := testContext(t)
	name := uniqueName(t, "conn")
	c, err := leveret.Dial(ctx, amqpURL(), leveret.WithConnectionName(name), leveret.WithReconnect(nil))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) }) // if the test stops early
	q := uniqueName(t, "q")
	deleteAtEnd(t, []string{q}, nil)
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	// A modest window: with a huge backlog the broker's channel cannot stop
	// within its termination timeout and RabbitMQ resets the TCP connection
	// instead of sending connection.close (still a *ConnectionError).
	p, err := confirm.New(ctx, c, confirm.WithWindow(256))
	require.NoError(t, err)
	pid := connectionPID(t, name)
	require.NotEmpty(t, pid, "connection %q not found", name)

	var (
		wg       sync.WaitGroup
		ps       []*leveret.Promise[confirm.Outcome]
		maxInFly int
	)
	wg.Go(func() { // owner: this attempt; exits once a publish is refused
		body := make([]byte, 100)
		for i := 0; ctx.Err() == nil; i++ {
			pr := p.Publish(ctx, cfMsg(q, i, body))
			ps = append(ps, pr)
			maxInFly = max(maxInFly, p.InFlight())
			// One read of Err: between two, a pending promise can settle
			// acked, and the loop would stop on a success.
			if err := pr.Err(); err != nil && !errors.Is(err, leveret.ErrPending) {
				return
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // let the stream get going
	out, err := ctlErr("close_connection", pid, "confirm test")
	require.NoError(t, err, "rabbitmqctl close_connection: %s", out)
	wg.Wait()

	acked, refused := 0, 0
	for i, pr := range ps {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		o, err := pr.Wait(wctx)
		cancel()
		require.NotErrorIs(t, err, context.DeadlineExceeded, "publish %d hangs", i)
		if err == nil {
			require.Equal(t, confirm.Acked, o.Status, "publish %d", i)
			require.Zero(t, inDoubt+refused, "publish %d acked after an earlier one failed", i)
			acked++
			continue
		}
		require.ErrorAs(t, err, new(*leveret.ConnectionError), "publish %d", i)
		if errors.Is(err, confirm.ErrNotConfirmed) {
			inDoubt++
		} else {
			refused++
		}
	}
	t.Logf("%d publishes: %d acked before the close, %d failed in flight and %d were refused, all with the connection error "+
		"(largest in flight %d); connection: %v", len(ps), acked, inDoubt, refused, maxInFly, c.Err())
	require.NotZero(t, acked, "the stream ran")
	require.NotZero(t, inDoubt+refused, "the stream ended with a failure")
	require.Eventually(t, func() bool { return p.Err() != nil }, 5*time.Second, 10*time.Millisecond)
	require.ErrorAs(t, p.Err(), new(*leveret.ConnectionError))
	assert.Zero(t, p.InFlight())
	require.ErrorAs(t, p.Publish(ctx, cfMsg(q, 0, nil)).Err(), new(*leveret.ConnectionError))

	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Close(cctx))
	require.NoError(t, c.Close(cctx))
	return inDoubt
}

// The window is never exceeded, even with many goroutines publishing, and
// every publish settles once.
func TestConfirmWindowConcurrentPublishers(t *testing.T) {
	const goroutines, each, window = 8, 2000, 64
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	p := cfPublisher(t, c, confirm.WithWindow(window))

	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []*leveret.Promise[confirm.Outcome]
	var over int
	for g := range goroutines {
		wg.Go(func() { // owner: this test; exits after its publishes
			local := make([]*leveret.Promise[confirm.Outcome], 0, each)
			for i := range each {
				local = append(local, p.Publish(ctx, cfMsg(q, g*each+i, nil)))
				if p.InFlight() > window {
					mu.Lock()
					over++
					mu.Unlock()
				}
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	require.NoError(t, p.Flush(ctx))
	assert.Zero(t, over, "in flight above the window")
	outs, err := leveret.Collect(ctx, all)
	require.NoError(t, err)
	for i, o := range outs {
		require.Equal(t, confirm.Acked, o.Status, "publish %d", i)
	}
	assert.Equal(t, uint32(goroutines*each), cfWaitCount(t, c, q, goroutines*each))

	// A cancelled context refuses at once, and nothing is sent.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	pr := p.Publish(cctx, cfMsg(q, -1, nil))
	requireSettledNow(t, pr, "publish with a cancelled context")
	require.ErrorIs(t, pr.Err(), context.Canceled)
	require.NoError(t, p.Flush(ctx))

	// After Close, publishing is refused with ErrClosed.
	require.NoError(t, p.Close(ctx))
	require.ErrorIs(t, p.Publish(ctx, cfMsg(q, -2, nil)).Err(), leveret.ErrClosed)
	require.ErrorIs(t, p.Err(), leveret.ErrClosed)
	require.NoError(t, p.Close(ctx), "Close is idempotent")
	assert.Equal(t, uint32(goroutines*each), cfWaitCount(t, c, q, goroutines*each))
}

// Confirmed against unconfirmed throughput, in the same run: 100,000
// messages of 100 bytes each way; confirmed with a window of 1,000.
func TestConfirmRate(t *testing.T) {
	const n, window = 100_000, 1000
	c := dial(t)
	ctx := testContext(t)
	body := make([]byte, 100)

	// Unconfirmed: publish, wait for the last promise (written), then for
	// the queue to hold everything.
	qu := cfQueue(t, c, nil)
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	start := time.Now()
	var last *leveret.Promise[struct{}]
	for i := range n {
		last = ch.Publish(ctx, cfMsg(qu, i, body))
	}
	_, err = last.Wait(ctx)
	require.NoError(t, err)
	written := time.Since(start)
	require.Equal(t, uint32(n), cfWaitCount(t, c, qu, n))
	unconfirmed := time.Since(start)
	require.NoError(t, ch.Close(ctx))

	// Confirmed: every promise acked.
	qc := cfQueue(t, c, nil)
	p := cfPublisher(t, c, confirm.WithWindow(window))
	start = time.Now()
	ps := make([]*leveret.Promise[confirm.Outcome], n)
	for i := range ps {
		ps[i] = p.Publish(ctx, cfMsg(qc, i, body))
	}
	outs, err := leveret.Collect(ctx, ps)
	confirmed := time.Since(start)
	require.NoError(t, err)
	for i, o := range outs {
		require.Equal(t, confirm.Acked, o.Status, "publish %d", i)
	}
	require.Equal(t, uint32(n), cfWaitCount(t, c, qc, n))

	rate := func(d time.Duration) float64 { return n / d.Seconds() }
	t.Logf("CONFIRM-RATE: %d msgs x 100 B: confirmed (window %d) %v = %.0f msg/s; "+
		"unconfirmed %v = %.0f msg/s (all written after %v); confirmed/unconfirmed throughput %.2f; GOMAXPROCS %d",
		n, window, confirmed.Round(time.Millisecond), rate(confirmed),
		unconfirmed.Round(time.Millisecond), rate(unconfirmed), written.Round(time.Millisecond),
		rate(confirmed)/rate(unconfirmed), runtime.GOMAXPROCS(0))
}
