package leveret_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// queueGoneBroker refuses basic.consume on connections after the first
// with channel.close 404, as RabbitMQ does for a missing queue, refusals
// times; then it accepts and delivers one message.
func queueGoneBroker(refusals int32, refused *atomic.Int32, drop <-chan struct{}) func(*fakeserver.Conn) {
	var conns atomic.Int32
	return func(c *fakeserver.Conn) {
		n := conns.Add(1)
		serveMethods(c, func(ch uint16, m proto.Method) (bool, error) {
			bc, ok := m.(*proto.BasicConsume)
			switch {
			case m == nil:
				select {
				case <-drop:
					return true, nil
				default:
					return false, nil
				}
			case !ok:
				return false, nil
			case n > 1 && refused.Load() < refusals:
				refused.Add(1)
				return false, c.Send(ch, &proto.ChannelClose{ReplyCode: uint16(proto.NotFound),
					ReplyText: "NOT_FOUND - no queue 'q' in vhost '/'", ClassID: uint16(proto.BasicConsumeID >> 16), MethodID: uint16(proto.BasicConsumeID & 0xffff)})
			}
			if err := c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: bc.ConsumerTag}); err != nil || n == 1 {
				return false, err
			}
			return false, c.SendContent(ch, &proto.BasicDeliver{ConsumerTag: bc.ConsumerTag, DeliveryTag: 1, RoutingKey: "q"},
				&ops.Message{Body: []byte("back")})
		})
	}
}

// TestRecoveryConsumerWaitsForItsQueue (issue 23, §3): a Client.Consume
// consumer whose queue is missing when the client reconnects (404) does
// not end: it is tried again with growing delays, each refusal reported in
// an EventConsumerRefused, and resumes on the same Deliveries channel once
// the queue is back. Before, it ended for good with the 404.
func TestRecoveryConsumerWaitsForItsQueue(t *testing.T) {
	leakCheck(t)
	var refused atomic.Int32
	drop := make(chan struct{}, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: 20 * time.Millisecond}, queueGoneBroker(3, &refused, drop))
	c, refusals := dialEvents(t, s, leveret.EventConsumerRefused)
	cs, err := await(t, c.Consume(ops.Consume{Queue: "q"}))
	require.NoError(t, err)
	drop <- struct{}{} // the first connection drops
	for attempt := 1; attempt <= 3; attempt++ {
		e := receive(t, refusals, "EventConsumerRefused")
		require.Equal(t, attempt, e.Attempt)
		require.ErrorIs(t, e.Err, leveret.ErrNotFound)
		require.NoError(t, cs.Err(), "the consumer ended")
	}
	d := receive(t, cs.Deliveries(), "the delivery once the queue is back")
	require.NotNil(t, d, "the consumer ended: %v", cs.Err())
	require.Equal(t, "back", string(d.Body))
	require.NoError(t, cs.Err())
}

// TestRecoveryConsumerWaitingIsCancelled: a consumer waiting for its queue
// ends at once when cancelled, and Close stops its retries.
func TestRecoveryConsumerWaitingIsCancelled(t *testing.T) {
	leakCheck(t)
	var refused atomic.Int32
	drop := make(chan struct{}, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: 20 * time.Millisecond}, queueGoneBroker(1<<30, &refused, drop))
	c, refusals := dialEvents(t, s, leveret.EventConsumerRefused)
	waiting, err := await(t, c.Consume(ops.Consume{Queue: "q"}))
	require.NoError(t, err)
	other, err := await(t, c.Consume(ops.Consume{Queue: "q"}))
	require.NoError(t, err)
	drop <- struct{}{} // the first connection drops
	receive(t, refusals, "EventConsumerRefused")
	receive(t, refusals, "EventConsumerRefused")
	_, err = await(t, waiting.Cancel())
	require.NoError(t, err)
	awaitDone(t, waiting.Done(), "the cancelled consumer")
	require.NoError(t, other.Err(), "the other one still waits")
	require.NoError(t, closeClient(t, c)) // stops its retries; leakCheck sees them gone
}

// A Client.Consume consumer whose own channel the broker closes while it
// runs (a channel error: here 406, as for an ack of an unknown tag) does
// not end: it starts again on a fresh channel, with its Deliveries channel,
// and the close is reported in an EventConsumerRefused. It ends only when
// cancelled or when the client closes.
func TestClientConsumerSurvivesItsChannelsClose(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{}
	conn, cs, consumes, refused := startWatchedConsumer(t, b)
	first, ok := b.ChannelOf(conn, "c")
	require.True(t, ok)
	require.NoError(t, conn.Send(first, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - unknown delivery tag 7", ClassID: 60, MethodID: 80}))
	require.ErrorIs(t, receive(t, refused, "EventConsumerRefused"), leveret.ErrPreconditionFailed)

	requireRunsAgain(t, b, conn, cs, consumes)
}

// requireRunsAgain checks that cs, started by startWatchedConsumer, was
// started again and delivers on its fresh channel, acks included.
func requireRunsAgain(t *testing.T, b *fakeserver.Broker, conn *fakeserver.Conn, cs *leveret.Consumer, consumes chan struct{}) {
	t.Helper()
	receive(t, consumes, "basic.consume on a fresh channel")
	_, err := b.DeliverToAll(conn, "after")
	require.NoError(t, err)
	d := receive(t, cs.Deliveries(), "a delivery on the fresh channel")
	require.Equal(t, "after", string(d.Body))
	require.NoError(t, cs.Err())
	_, err = d.Ack().Wait(waitCtx(t))
	require.NoError(t, err)
}

// startWatchedConsumer starts Client.Consume consumer "c" of queue "q" on
// a client of b's fake server that reconnects at once. consumes receives
// each basic.consume b answers (after the first, already received),
// refused each EventConsumerRefused's error. b's Answered is taken.
func startWatchedConsumer(t *testing.T, b *fakeserver.Broker) (conn *fakeserver.Conn, cs *leveret.Consumer, consumes chan struct{}, refused chan error) {
	t.Helper()
	consumes = make(chan struct{}, 4)
	b.Answered = func(_ int, _ uint16, m proto.Method) {
		if m.ID() == proto.BasicConsumeID {
			consumes <- struct{}{}
		}
	}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	refused = make(chan error, 4)
	c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == leveret.EventConsumerRefused {
				refused <- e.Err
			}
		}))
	cs, err := await(t, c.Consume(ops.Consume{Queue: "q", ConsumerTag: "c"}))
	require.NoError(t, err)
	receive(t, consumes, "the first basic.consume")
	return s.Conns()[0], cs, consumes, refused
}
