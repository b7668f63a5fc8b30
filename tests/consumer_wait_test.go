package tests

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// TestConsumerWaitsForItsQueue (issue 23, §3): a consumer of a queue that
// another client declares, and that is missing when the client reconnects
// after the broker comes back, does not end: its restart is refused (404,
// EventConsumerRefused) and tried again, and it resumes within 2 s of the
// queue being declared again, on the same Deliveries channel. Before, it
// ended for good with the 404. (The client's dials wait while the queue is
// deleted: a transient queue, which stop_app drops, is refused by RabbitMQ
// 4.x with its next defaults.)
func TestConsumerWaitsForItsQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*opTimeout)
	defer cancel()
	node, queue := node2Name(t), uniqueName(t, "q")
	owner, err := leveret.Dial(ctx, node2URL(), leveret.WithReconnect(nil))
	require.NoError(t, err, "dial node %s (make test starts it: scripts/broker.sh node leveret2 5673)", node)
	_, err = owner.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, owner.Close(ctx)) // the other service is gone for now

	log := newEventLog()
	var gate atomic.Pointer[chan struct{}] // dials wait until it is closed
	open := make(chan struct{})
	close(open)
	gate.Store(&open)
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		select {
		case <-*gate.Load():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c, err := leveret.Dial(ctx, node2URL(), leveret.WithEventHandler(log.handle), leveret.WithDialer(dialer))
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close(context.Background())) }()
	cs, err := c.Consume(ops.Consume{Queue: queue}).Wait(ctx)
	require.NoError(t, err)

	shut := make(chan struct{})
	gate.Store(&shut)
	out, err := ctlErr("-n", node, "stop_app")
	require.NoError(t, err, "stop_app: %s", out)
	out, err = ctlErr("-n", node, "start_app")
	require.NoError(t, err, "start_app: %s", out)
	owner, err = leveret.Dial(ctx, node2URL(), leveret.WithReconnect(nil))
	require.NoError(t, err)
	_, err = owner.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, owner.Close(ctx))
	close(shut)
	refused := log.wait(t, leveret.EventConsumerRefused, 1)
	require.ErrorIs(t, refused.Err, leveret.ErrNotFound)
	require.NoError(t, cs.Err(), "the consumer ended")

	owner, err = leveret.Dial(ctx, node2URL(), leveret.WithReconnect(nil))
	require.NoError(t, err)
	defer owner.Close(context.Background())
	defer owner.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(ctx)
	_, err = owner.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	declared := time.Now()
	for {
		_, err = owner.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("back")}}).Wait(ctx)
		require.NoError(t, err)
		select {
		case d, ok := <-cs.Deliveries():
			require.True(t, ok, "the consumer ended: %v", cs.Err())
			resumed := time.Since(declared)
			t.Logf("consumer resumed %v after its queue was declared again (%d refusals)", resumed, len(log.of(leveret.EventConsumerRefused)))
			require.Equal(t, "back", string(d.Body))
			require.Less(t, resumed, 2*time.Second)
			return
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the consumer did not resume")
		}
	}
}
