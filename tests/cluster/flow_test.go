package cluster

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

// flow is a confirmed publisher (confirm.WithRepublish) and an acking
// consumer on one queue, running while a test breaks the cluster. Every
// message body is its sequence number, so the test can tell what was
// lost, what came twice, and when each side resumed.
type flow struct {
	t  *testing.T
	wg sync.WaitGroup

	pubStop, stop     chan struct{} // end the publisher; end the consumer
	pubOnce, stopOnce sync.Once

	mu          sync.Mutex
	publishedAt []time.Time // by sequence number: when Publish returned
	confirmedAt []time.Time // by sequence number: zero until acked
	failed      []error     // publishes that did not end acked
	seenAt      []time.Time // by sequence number: first delivery
	seen        map[int]int // deliveries per sequence number
	ackErrs     int         // acks refused as stale (their deliveries come again)
	change      chan struct{}
}

// startFlow starts publishing to queue at about rate msg/s and consuming
// it with the given prefetch, on c.
func startFlow(t *testing.T, ctx context.Context, c *leveret.Client, queue string, rate int, prefetch uint16) *flow {
	t.Helper()
	f := &flow{t: t, pubStop: make(chan struct{}), stop: make(chan struct{}), seen: make(map[int]int), change: make(chan struct{}, 1)}
	t.Cleanup(f.end) // also when the test fails half-way
	p, err := confirm.New(ctx, c, confirm.WithWindow(500), confirm.WithRepublish())
	require.NoError(t, err)
	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: prefetch}).Wait(ctx)
	require.NoError(t, err)

	outcomes := make(chan *leveret.Promise[confirm.Outcome], 1<<16)
	f.wg.Go(func() { // owner: the flow; exits when pubStop closes (or ctx ends)
		defer close(outcomes)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-f.pubStop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Only this goroutine appends: publishedAt's length is the next number.
			f.mu.Lock()
			i := len(f.publishedAt)
			f.mu.Unlock()
			pr := p.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i)), DeliveryMode: ops.Persistent}})
			f.mu.Lock()
			f.publishedAt = append(f.publishedAt, time.Now())
			f.confirmedAt = append(f.confirmedAt, time.Time{})
			f.mu.Unlock()
			outcomes <- pr
		}
	})
	f.wg.Go(func() { // owner: the flow; exits when the publisher has stopped and every outcome is in
		defer p.Close(context.Background())
		i := 0
		for pr := range outcomes {
			out, err := pr.Wait(ctx)
			f.mu.Lock()
			if err == nil && out.Acked() {
				f.confirmedAt[i] = time.Now()
			} else {
				f.failed = append(f.failed, errors.Join(err, errors.New(out.String())))
			}
			f.mu.Unlock()
			i++
		}
	})
	f.wg.Go(func() { // owner: the flow; exits when stop closes, the consumer ends, or ctx ends
		for {
			select {
			case d, ok := <-cs.Deliveries():
				if !ok {
					return
				}
				f.received(ctx, d)
			case <-f.stop:
				cs.Cancel()
				return
			case <-ctx.Done():
				return
			}
		}
	})
	return f
}

func (f *flow) received(ctx context.Context, d *leveret.Delivery) {
	seq, err := strconv.Atoi(string(d.Body))
	if err != nil {
		f.t.Errorf("a body that is not a sequence number: %q", d.Body)
		return
	}
	_, ackErr := d.Ack().Wait(ctx)
	f.mu.Lock()
	for len(f.seenAt) <= seq {
		f.seenAt = append(f.seenAt, time.Time{})
	}
	if f.seenAt[seq].IsZero() {
		f.seenAt[seq] = time.Now()
	}
	f.seen[seq]++
	if errors.Is(ackErr, leveret.ErrStaleDelivery) {
		f.ackErrs++
	} else if ackErr != nil {
		f.t.Errorf("ack %d: %v", seq, ackErr)
	}
	f.mu.Unlock()
	select {
	case f.change <- struct{}{}:
	default:
	}
}

// boundary is the first sequence number published after at.
func (f *flow) boundary(at time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.publishedAt {
		if p.After(at) {
			return i
		}
	}
	return len(f.publishedAt)
}

// resumed waits up to within for a confirm and a delivery of a message
// numbered from seq on, and returns when each came.
func (f *flow) resumed(seq int, within time.Duration) (confirmed, delivered time.Time) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		for i := seq; i < len(f.confirmedAt) && confirmed.IsZero(); i++ {
			if !f.confirmedAt[i].IsZero() {
				confirmed = f.confirmedAt[i]
			}
		}
		for i := seq; i < len(f.seenAt) && delivered.IsZero(); i++ {
			if !f.seenAt[i].IsZero() {
				delivered = f.seenAt[i]
			}
		}
		f.mu.Unlock()
		if !confirmed.IsZero() && !delivered.IsZero() {
			return confirmed, delivered
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("no confirm (%v) or no delivery (%v) of a message from #%d on within %v", confirmed, delivered, seq, within)
	return
}

// finish stops publishing, waits for every outcome and for the consumer to
// have seen every message, then stops the consumer. It fails the test if a
// publish did not end acked (nothing confirmed may be lost) or a message
// never arrived, and returns how many were published and how many
// deliveries were duplicates.
func (f *flow) finish(within time.Duration) (published, duplicates int) {
	f.t.Helper()
	// Stop only the publisher first: the consumer must drain what it owes.
	f.mu.Lock()
	stopAt := len(f.publishedAt)
	f.mu.Unlock()
	deadline := time.After(within)
	f.stopPublishing()
	for {
		f.mu.Lock()
		published = len(f.publishedAt)
		missing := 0
		for i := range published {
			if f.seen[i] == 0 {
				missing++
			}
		}
		f.mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-f.change:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			f.t.Fatalf("%d of %d messages never consumed (publisher stopped at about #%d)", missing, published, stopAt)
		}
	}
	time.Sleep(300 * time.Millisecond) // late duplicates
	f.end()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(f.t, f.failed, "publishes not acked")
	for i := range published {
		require.False(f.t, f.confirmedAt[i].IsZero(), "publish %d not confirmed", i)
		duplicates += f.seen[i] - 1
	}
	return published, duplicates
}

// stopPublishing ends the publishing loop; the outcomes of what it
// published still come in.
func (f *flow) stopPublishing() { f.pubOnce.Do(func() { close(f.pubStop) }) }

// end stops publisher and consumer and joins the flow's goroutines.
func (f *flow) end() {
	f.stopPublishing()
	f.stopOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}
