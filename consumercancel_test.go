package leveret_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
)

// TestClientConsumerCancelledByBroker: a Client.Consume consumer the
// broker cancels (basic.cancel) runs again on a fresh channel while its
// queue is there (RabbitMQ 4.3 cancels a quorum queue's consumer that held
// a delivery past its consumer timeout), reported in an
// EventConsumerRefused; the delivery it held is stale. When the queue is
// gone, it ends with ErrConsumerCancelled.
func TestClientConsumerCancelledByBroker(t *testing.T) {
	for _, queueThere := range []bool{true, false} {
		t.Run(map[bool]string{true: "queue there", false: "queue gone"}[queueThere], func(t *testing.T) {
			leakCheck(t)
			b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
				if d, ok := m.(*proto.QueueDeclare); ok && d.Passive && !queueThere {
					return &proto.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'q' in vhost '/'", ClassID: 50, MethodID: 10}
				}
				return nil
			}}
			conn, cs, consumes, refused := startWatchedConsumer(t, b)
			_, err := b.DeliverToAll(conn, "held")
			require.NoError(t, err)
			held := receive(t, cs.Deliveries(), "the held delivery")
			first, ok := b.ChannelOf(conn, "c")
			require.True(t, ok)
			require.NoError(t, conn.Send(first, &proto.BasicCancel{ConsumerTag: "c", NoWait: true}))

			if !queueThere {
				awaitDone(t, cs.Done(), "the consumer's end")
				require.ErrorIs(t, cs.Err(), leveret.ErrConsumerCancelled)
				_, open := <-cs.Deliveries()
				require.False(t, open)
				return
			}
			require.ErrorIs(t, receive(t, refused, "EventConsumerRefused"), leveret.ErrConsumerCancelled)
			_, err = held.Ack().Wait(waitCtx(t))
			require.ErrorIs(t, err, leveret.ErrStaleDelivery, "the held delivery went back to the queue with its channel")
			requireRunsAgain(t, b, conn, cs, consumes)
		})
	}
}
