package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

// countDeliveries consumes total distinct messages from cs (auto-ack),
// then whatever duplicates are still on their way, and returns how often
// each id came. id reads a message's number from its body, or fails the
// test if the body is not one that was published.
func countDeliveries(t *testing.T, ctx context.Context, cs *leveret.Consumer, total int, id func([]byte) int) map[int]int {
	t.Helper()
	seen := make(map[int]int, total)
	for len(seen) < total {
		select {
		case d := <-cs.Deliveries():
			seen[id(d.Body)]++
		case <-ctx.Done():
			t.Fatalf("%d of %d messages in the queue", len(seen), total)
		}
	}
	time.Sleep(200 * time.Millisecond) // duplicates still on their way
	for {
		select {
		case d := <-cs.Deliveries():
			seen[id(d.Body)]++
		default:
			return seen
		}
	}
}

// forceCloses closes the client's connection n times from the broker,
// every after the previous recovery. closed is closed after the last
// recovery; wait joins the goroutine doing it.
func forceCloses(t *testing.T, name string, log *eventLog, n int, every time.Duration) (closed <-chan struct{}, wait func()) {
	ch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // owner: the test, through wait; exits after the last close has been recovered
		defer close(ch)
		for i := 1; i <= n; i++ {
			time.Sleep(every)
			forceClose(t, name)
			log.waitRecovered(t, i)
		}
	})
	return ch, wg.Wait
}

// publishUntil calls publish with 0, 1, 2, ... until closed is closed
// and at least atLeast calls have been made.
func publishUntil(closed <-chan struct{}, atLeast int, publish func(i int)) {
	for i := 0; ; i++ {
		select {
		case <-closed:
			if i >= atLeast {
				return
			}
		default:
		}
		publish(i)
	}
}

// requireAllAcked waits for every promise and requires it Acked.
func requireAllAcked(t *testing.T, ctx context.Context, ps []*leveret.Promise[confirm.Outcome]) {
	t.Helper()
	for i, pr := range ps {
		out, err := pr.Wait(ctx)
		require.NoError(t, err, "publish %d", i)
		require.True(t, out.Acked(), "publish %d: %v", i, out.Status)
	}
}

func duplicates(seen map[int]int) int {
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	return dups
}

// largeRecoveryBody fills b with message i: its number, then bytes derived
// from it.
func largeRecoveryBody(b []byte, i int) {
	binary.BigEndian.PutUint64(b, uint64(i))
	for j := 8; j < len(b); j++ {
		b[j] = byte(i*29 + j*7 + j>>10)
	}
}

// A confirm.Publisher with WithRepublish publishing 256 KiB bodies (each
// written through from the caller's buffer, which is rewritten as soon as
// Publish returns) across forced closes: every promise ends Acked, and
// every message is in the queue at least once with exactly the bytes it
// was published with. A close lands mid-write more often than not at this
// size, so this also checks that a write ended by a drop neither returns
// early nor shifts the confirmation numbering.
func TestRecoveryConfirmRepublishLargeBodies(t *testing.T) {
	ctx, name, queue, log, c := recoverySetup(t, 4*opTimeout)
	const window, closes, atLeast, size = 20, 4, 300, 256 << 10
	p, err := confirm.New(ctx, c, confirm.WithWindow(window), confirm.WithRepublish())
	require.NoError(t, err)
	defer p.Close(context.Background())

	closed, wait := forceCloses(t, name, log, closes, 150*time.Millisecond)
	buf := make([]byte, size)
	var ps []*leveret.Promise[confirm.Outcome]
	publishUntil(closed, atLeast, func(i int) {
		largeRecoveryBody(buf, i)
		ps = append(ps, p.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: buf}}))
		clear(buf[8:]) // the caller owns buf again
	})
	wait()
	requireAllAcked(t, ctx, ps)
	total := len(ps)
	cs, err := c.Consume(ops.Consume{Queue: queue, NoAck: true, Prefetch: 50}).Wait(ctx)
	require.NoError(t, err)
	want := make([]byte, size)
	seen := countDeliveries(t, ctx, cs, total, func(b []byte) int {
		require.Len(t, b, size)
		i := int(binary.BigEndian.Uint64(b))
		require.Less(t, i, total, "a message that was never published")
		largeRecoveryBody(want, i)
		require.True(t, bytes.Equal(want, b), "message %d arrived with bytes it was not published with", i)
		return i
	})
	dups := duplicates(seen)
	t.Logf("%d closes, %d messages of %d KiB confirmed, all intact in the queue; %d duplicates (bound %d)", closes, total, size>>10, dups, closes*window)
	require.LessOrEqual(t, dups, closes*window)
}
