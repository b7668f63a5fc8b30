package cluster

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

// 3. A stream consumer started at x-stream-offset "first" reads half a
// stream, the node its client is connected to stops, and after the
// failover it goes on from the offset after the last delivery it handed
// over (leveret records it from each delivery's x-stream-offset header):
// it sees every message once, in order, with no gap and no duplicate,
// also those published after the failover.
func TestFailoverStreamConsumerResumesAtOffset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const before, after = 2000, 1000
	stream := uniqueName(t, "stream")
	deleteQueue(t, stream)
	c, log := dialCluster(t, ctx, 0)
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: stream, Durable: true,
		Args: ops.Table{"x-queue-type": "stream", "x-initial-cluster-size": 3}}).Wait(ctx)
	require.NoError(t, err)
	publish(t, ctx, c, stream, 0, before)

	on := log.connectedTo(t)
	cs, err := c.Consume(ops.Consume{Queue: stream, Prefetch: 50, Args: ops.Table{"x-stream-offset": "first"}}).Wait(ctx)
	require.NoError(t, err)
	var got []int
	stale := 0
	read := func(n int) {
		for len(got) < n {
			select {
			case d, ok := <-cs.Deliveries():
				require.True(t, ok, "consumer ended: %v", cs.Err())
				seq, err := strconv.Atoi(string(d.Body))
				require.NoError(t, err)
				got = append(got, seq)
				// A stream's ack only returns credit; one from before the
				// reconnect is refused (stale) and harmless.
				if _, err := d.Ack().Wait(ctx); errors.Is(err, leveret.ErrStaleDelivery) {
					stale++
				} else {
					require.NoError(t, err)
				}
			case <-ctx.Done():
				t.Fatalf("read %d of %d", len(got), n)
			}
		}
	}
	read(before / 2)
	stopAt := time.Now()
	stopNode(t, on)
	_, recAt := log.wait(t, leveret.EventRecovered, 1, failoverMax)
	_, discAt := log.wait(t, leveret.EventDisconnected, 1, failoverMax)
	now := log.connectedTo(t)
	publish(t, ctx, c, stream, before, after)
	read(before + after)
	t.Logf("stopped %s after %d deliveries; disconnected after %v, recovered on %s %v after the stop began; read %d messages (%d acks refused as stale)",
		on.name, before/2, discAt.Sub(stopAt), now.name, recAt.Sub(stopAt), len(got), stale)
	for i, seq := range got {
		require.Equal(t, i, seq, "delivery %d is message %d: a gap or a duplicate", i, seq)
	}
	// Nothing more comes: no copy of what was already read.
	select {
	case d := <-cs.Deliveries():
		t.Fatalf("an extra delivery: %q", d.Body)
	case <-time.After(500 * time.Millisecond):
	}
}

// publish sends messages numbered from..from+n-1 to queue with confirms
// and waits until the broker has confirmed them all.
func publish(t *testing.T, ctx context.Context, c *leveret.Client, queue string, from, n int) {
	t.Helper()
	p, err := confirm.New(ctx, c, confirm.WithRepublish())
	require.NoError(t, err)
	defer p.Close(ctx)
	ps := make([]*leveret.Promise[confirm.Outcome], 0, n)
	for i := from; i < from+n; i++ {
		ps = append(ps, p.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
	}
	for i, pr := range ps {
		out, err := pr.Wait(ctx)
		require.NoError(t, err, "publish %d", from+i)
		require.True(t, out.Acked(), "publish %d: %v", from+i, out)
	}
}
