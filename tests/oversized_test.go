package tests

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// TestOversizedDeliveryDeadLettered (issue 23, §1): with WithMaxMessageSize
// below a message in the queue, that message is rejected without requeue,
// so the queue's dead-letter exchange routes it to the parking queue; the
// messages around it are each delivered once, the connection stays (no
// reconnect) and EventMessageRefused names the queue. Before, the
// connection ended (506) and the same message came back on every new one.
func TestOversizedDeliveryDeadLettered(t *testing.T) {
	ctx := testContext(t)
	queue, parking := uniqueName(t, "q"), uniqueName(t, "parking")
	deleteAtEnd(t, []string{queue, parking}, nil)
	log := newEventLog()
	c := dial(t, leveret.WithMaxMessageSize(10_000), leveret.WithEventHandler(log.handle))
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: parking, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true, Args: ops.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": parking}}).Wait(ctx)
	require.NoError(t, err)
	sizes := []int{10, 10, 20_000, 10, 10}
	var sent []leveret.Waiter
	for i, size := range sizes {
		sent = append(sent, c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{
			MessageID: fmt.Sprint(i), Body: bytes.Repeat([]byte("m"), size)}}))
	}
	require.NoError(t, leveret.WaitAll(ctx, sent...))

	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: 10}).Wait(ctx)
	require.NoError(t, err)
	for _, want := range []string{"0", "1", "3", "4"} {
		select {
		case d := <-cs.Deliveries():
			require.Equal(t, want, d.MessageID)
			require.False(t, d.Redelivered)
			_, err := d.Ack().Wait(ctx)
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatalf("message %s not delivered", want)
		}
	}
	refused := log.wait(t, leveret.EventMessageRefused, 1)
	require.ErrorIs(t, refused.Err, leveret.ErrMessageTooLarge)
	require.ErrorContains(t, refused.Err, queue)

	// The big one waits in the parking queue; a client without the limit gets it.
	g, err := dial(t).Get(ops.Get{Queue: parking, NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	require.NotNil(t, g.Delivery)
	require.Equal(t, "2", g.Delivery.MessageID)
	require.Len(t, g.Delivery.Body, 20_000)
	require.Empty(t, log.of(leveret.EventDisconnected), "the connection stayed")
	require.NoError(t, cs.Err())
}
