package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// TestConsumerTimeout: a Client.Consume consumer that holds a delivery
// past its queue's consumer timeout (x-consumer-timeout, 2 s here) is
// stopped by the broker: RabbitMQ 4.3 cancels it (basic.cancel), 4.0
// closes its channel with 406 at its next channel tick (within a minute).
// Either way the consumer starts again on a fresh channel, reported in an
// EventConsumerRefused; the held delivery comes back (Redelivered), its
// old ack fails with ErrStaleDelivery, nothing is lost and the consumer
// never ends. RabbitMQ 3.10 has no per-queue consumer timeout (it came
// with 3.12): the test says so and skips there.
func TestConsumerTimeout(t *testing.T) {
	refused := make(chan leveret.Event, 8)
	c := dial(t, leveret.WithEventHandler(func(e leveret.Event) {
		if e.Kind == leveret.EventConsumerRefused {
			refused <- e
		}
	}))
	if v, _ := c.ServerProperties()["version"].(string); !versionAtLeast(v, 3, 12) {
		t.Skipf("RabbitMQ %s has no per-queue consumer timeout (x-consumer-timeout came with 3.12; 3.10 accepts the argument and ignores it)", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	queue := uniqueName(t, "q")
	deleteAtEnd(t, []string{queue}, nil)
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true,
		Args: ops.Table{"x-queue-type": "quorum", "x-consumer-timeout": int32(2000)}}).Wait(ctx)
	require.NoError(t, err)
	for _, body := range []string{"held", "b", "c"} {
		_, err := c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(body)}}).Wait(ctx)
		require.NoError(t, err)
	}
	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: 1}).Wait(ctx)
	require.NoError(t, err)
	held := <-cs.Deliveries()
	require.Equal(t, "held", string(held.Body))
	start := time.Now()

	var e leveret.Event
	select {
	case e = <-refused:
	case <-ctx.Done():
		t.Fatal("the broker never stopped the consumer over its timeout")
	}
	t.Logf("stopped %v after the delivery: %v", time.Since(start).Round(time.Millisecond), e.Err)
	if !strings.Contains(e.Err.Error(), "timed out") {
		require.ErrorIs(t, e.Err, leveret.ErrConsumerCancelled) // 4.3: basic.cancel, the queue still there
	}
	_, err = held.Ack().Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrStaleDelivery)

	var got []string
	for len(got) < 3 {
		select {
		case d := <-cs.Deliveries():
			got = append(got, string(d.Body))
			if string(d.Body) == "held" {
				require.True(t, d.Redelivered)
			}
			_, err := d.Ack().Wait(ctx)
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatalf("after the restart: got %q of 3", got)
		}
	}
	require.Equal(t, []string{"held", "b", "c"}, got)
	require.NoError(t, cs.Err())
	_, err = cs.Cancel().Wait(ctx)
	require.NoError(t, err)
}

// versionAtLeast reports whether a RabbitMQ version such as "4.3.6" is at
// least major.minor.
func versionAtLeast(version string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(version, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
