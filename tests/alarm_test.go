package tests

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// A memory alarm on a broker the tests own (the extra node, so the
// default broker's other users are not blocked): the broker sends
// connection.blocked once the connection publishes, the handler gets it
// with the broker's reason, Blocked reports it, and the publish waits
// (not failed, not reported done); when the alarm clears the handler gets
// connection.unblocked and the publish is confirmed.
func TestMemoryAlarmBlocksAndUnblocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
	defer cancel()
	node := node2Name(t)
	type change struct {
		blocked bool
		reason  string
	}
	changes := make(chan change, 4)
	c, err := leveret.Dial(ctx, node2URL(), leveret.WithBlockedHandler(func(blocked bool, reason string) {
		changes <- change{blocked, reason}
	}))
	require.NoError(t, err)
	defer c.Close(context.Background())
	queue := uniqueName(t, "alarm")
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true, AutoDelete: true}).Wait(ctx)
	require.NoError(t, err)

	restore := func() { ctlErr("-n", node, "set_vm_memory_high_watermark", "0.4") }
	t.Cleanup(restore)
	ctl(t, "-n", node, "set_vm_memory_high_watermark", "0.0000001")
	alarmAt := time.Now()
	pub := c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("held")}})
	select {
	case ch := <-changes:
		require.True(t, ch.blocked)
		require.Contains(t, ch.reason, "memory")
		t.Logf("connection.blocked %v after the alarm was set: %q", time.Since(alarmAt).Round(time.Millisecond), ch.reason)
	case <-ctx.Done():
		t.Fatal("no connection.blocked")
	}
	require.True(t, c.Blocked())
	time.Sleep(500 * time.Millisecond)
	select {
	case <-pub.Done():
		_, err := pub.Wait(ctx)
		t.Fatalf("the publish settled while the connection was blocked: %v", err)
	default:
	}

	restore()
	select {
	case ch := <-changes:
		require.False(t, ch.blocked)
	case <-ctx.Done():
		t.Fatal("no connection.unblocked")
	}
	require.False(t, c.Blocked())
	_, err = pub.Wait(ctx)
	require.NoError(t, err)
	r, err := c.Get(ops.Get{Queue: queue, NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	require.False(t, r.Empty())
	require.Equal(t, "held", string(r.Delivery.Body))
}
