package leveret_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// brokerClient dials a fakeserver.Broker with reconnecting off.
func brokerClient(t *testing.T, opts ...leveret.Option) (*leveret.Client, *fakeserver.Broker, *fakeserver.Server) {
	t.Helper()
	b := &fakeserver.Broker{}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	return dial(t, s, opts...), b, s
}

// Every topology operation of an explicit channel goes out and settles
// with the broker's answer.
func TestChannelTopologyOperations(t *testing.T) {
	leakCheck(t)
	c, _, _ := brokerClient(t)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	require.NoError(t, leveret.WaitAll(waitCtx(t),
		ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "a", Kind: ops.Direct}),
		ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "b", Kind: ops.Fanout}),
		ch.ExchangeBind(ops.ExchangeBind{Destination: "b", Source: "a", RoutingKey: "k"}),
		ch.QueueDeclare(ops.QueueDeclare{Queue: "q", Durable: true}),
		ch.QueueBind(ops.QueueBind{Queue: "q", Exchange: "b"}),
		ch.QueuePurge(ops.QueuePurge{Queue: "q"}),
		ch.QueueUnbind(ops.QueueUnbind{Queue: "q", Exchange: "b"}),
		ch.ExchangeUnbind(ops.ExchangeUnbind{Destination: "b", Source: "a", RoutingKey: "k"}),
		ch.QueueDelete(ops.QueueDelete{Queue: "q"}),
		ch.ExchangeDelete(ops.ExchangeDelete{Exchange: "b"}),
		ch.ExchangeDelete(ops.ExchangeDelete{Exchange: "a"}),
	))
	require.NoError(t, ch.Close(waitCtx(t)))
}

// Deliveries are settled every way: Ack, Nack, Reject on the delivery and
// with a bare tag on the channel; a second settlement is refused locally;
// Recover voids every outstanding tag.
func TestChannelSettlesDeliveries(t *testing.T) {
	leakCheck(t)
	c, b, s := brokerClient(t)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "c"}))
	require.NoError(t, err)
	conn := s.Conns()[0]
	var ds []*leveret.Delivery
	for i := range 6 {
		n, err := b.DeliverToAll(conn, "m")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		d := receive(t, cs.Deliveries(), "delivery")
		require.Equal(t, uint64(i+1), d.DeliveryTag)
		require.Same(t, ch, d.Channel())
		ds = append(ds, d)
	}
	require.Same(t, ch, cs.Channel())
	require.NoError(t, leveret.WaitAll(waitCtx(t),
		ds[0].Ack(),
		ds[1].Nack(ops.Nack{Requeue: true}),
		ds[2].Reject(ops.Reject{}),
		ch.Ack(ops.Ack{DeliveryTag: ds[3].DeliveryTag}),
		ch.Nack(ops.Nack{DeliveryTag: ds[4].DeliveryTag}),
	))
	_, err = ds[0].Ack().Wait(waitCtx(t))
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag, "a second ack")
	_, err = ch.Reject(ops.Reject{DeliveryTag: ds[1].DeliveryTag}).Wait(waitCtx(t))
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag, "a reject after the nack")

	_, err = ch.Recover(ops.Recover{Requeue: true}).Wait(waitCtx(t))
	require.NoError(t, err)
	_, err = ds[5].Ack().Wait(waitCtx(t))
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag, "an ack of a tag Recover voided")

	_, err = cs.Cancel().Wait(waitCtx(t))
	require.NoError(t, err)
	<-cs.Done()
	require.NoError(t, cs.Err())
}

// Confirm mode reports each publish's confirmation to OnConfirm; a
// mandatory publish nothing routes comes back to OnReturn first (a
// Client.Publish's promise fails with the *ReturnedError instead); OnClose
// hears the channel's end.
func TestChannelConfirmReturnAndCloseHandlers(t *testing.T) {
	leakCheck(t)
	c, _, _ := brokerClient(t)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	confirms := make(chan leveret.Confirmation, 4)
	returns := make(chan ops.Return, 1)
	closed := make(chan error, 1)
	ch.OnConfirm(func(cf leveret.Confirmation) { confirms <- cf })
	ch.OnReturn(func(r ops.Return) { returns <- r })
	ch.OnClose(func(err error) { closed <- err })
	_, err = ch.ConfirmSelect().Wait(waitCtx(t))
	require.NoError(t, err)

	_, err = ch.Publish(waitCtx(t), ops.Publish{RoutingKey: "q", Message: ops.Message{Body: []byte("one")}}).Wait(waitCtx(t))
	require.NoError(t, err)
	require.Equal(t, leveret.Confirmation{Ack: true, DeliveryTag: 1}, receive(t, confirms, "confirmation"))

	_, err = ch.Publish(waitCtx(t), ops.Publish{RoutingKey: "unroutable", Mandatory: true, Message: ops.Message{Body: []byte("two")}}).Wait(waitCtx(t))
	require.NoError(t, err, "confirmed, though returned")
	r := receive(t, returns, "return")
	require.Equal(t, leveret.ReplyCode(proto.NoRoute), r.ReplyCode)
	require.Equal(t, "two", string(r.Message.Body))
	require.Equal(t, uint64(2), receive(t, confirms, "confirmation of the returned message").DeliveryTag)

	_, err = c.Publish(waitCtx(t), ops.Publish{RoutingKey: "unroutable", Mandatory: true, Message: ops.Message{Body: []byte("three")}}).Wait(waitCtx(t))
	var re *leveret.ReturnedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "three", string(re.Return.Message.Body))

	require.NoError(t, ch.Close(waitCtx(t)))
	require.ErrorIs(t, receive(t, closed, "OnClose"), leveret.ErrClosed)
	late := make(chan error, 1)
	ch.OnClose(func(err error) { late <- err }) // set after the end: queued at once
	require.ErrorIs(t, receive(t, late, "OnClose after the end"), leveret.ErrClosed)
}

// TxRollback abandons a transaction: its acks are outstanding again and
// may be given anew, and the next commit commits.
func TestChannelTxRollbackRestoresAcks(t *testing.T) {
	leakCheck(t)
	c, b, s := brokerClient(t)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	_, err = ch.TxSelect().Wait(waitCtx(t))
	require.NoError(t, err)
	cs, err := await(t, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: "c"}))
	require.NoError(t, err)
	_, err = b.DeliverToAll(s.Conns()[0], "m")
	require.NoError(t, err)
	d := receive(t, cs.Deliveries(), "delivery")
	require.NoError(t, leveret.WaitAll(waitCtx(t), d.Ack(), ch.Publish(waitCtx(t), ops.Publish{RoutingKey: "q"}), ch.TxRollback()))
	require.NoError(t, leveret.WaitAll(waitCtx(t), d.Ack(), ch.TxCommit()), "the rolled-back ack is given again")
	_, err = d.Ack().Wait(waitCtx(t))
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag)
}

// Client.Get keeps a channel per queue, and closes idle ones past 16
// queues; a message it got is acked on its channel; a Get the broker
// refuses fails alone.
func TestClientGetChannels(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
		if g, ok := m.(*proto.BasicGet); ok && g.Queue == "missing" {
			return &proto.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'missing'", ClassID: 60, MethodID: 70}
		}
		return nil
	}}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	c := dial(t, s)
	ctx := waitCtx(t)
	for i := range 40 {
		r, err := c.Get(ops.Get{Queue: fmt.Sprint("full-", i)}).Wait(ctx)
		require.NoError(t, err)
		require.False(t, r.Empty())
		require.Equal(t, fmt.Sprint("full-", i), string(r.Delivery.Body))
		if i%2 == 0 { // the others keep a delivery outstanding: their channel stays
			_, err = r.Delivery.Ack().Wait(ctx)
			require.NoError(t, err)
		}
	}
	r, err := c.Get(ops.Get{Queue: "empty"}).Wait(ctx)
	require.NoError(t, err)
	require.True(t, r.Empty())
	_, err = c.Get(ops.Get{Queue: "missing"}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNotFound)
	r, err = c.Get(ops.Get{Queue: "full-1", NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	require.False(t, r.Empty())
}

// On the pool's own channels: a nacked Client.Publish fails with
// ErrNacked; a returned message over the size limit is dropped and
// reported (EventMessageRefused) while its publish settles by its
// confirmation; the same return on an explicit channel is reported too.
func TestPooledChannelNackAndOversizedReturn(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	refused := make(chan error, 4)
	c := dial(t, s, leveret.WithMaxMessageSize(1024), leveret.WithEventHandler(func(e leveret.Event) {
		if e.Kind == leveret.EventMessageRefused {
			refused <- e.Err
		}
	}))
	ctx := waitCtx(t)
	_, err := c.Publish(ctx, ops.Publish{RoutingKey: "nack", Message: ops.Message{Body: []byte("n")}}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNacked)

	big := ops.Message{Body: make([]byte, 4096)}
	_, err = c.Publish(ctx, ops.Publish{RoutingKey: "unroutable", Mandatory: true, Message: big}).Wait(ctx)
	require.NoError(t, err, "settled by its confirmation; the oversized return was dropped")
	err = receive(t, refused, "EventMessageRefused for the pooled channel's return")
	require.ErrorIs(t, err, leveret.ErrMessageTooLarge)
	require.ErrorContains(t, err, "returned message of 4096 bytes")

	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.Send(ctx, ops.Publish{RoutingKey: "unroutable", Mandatory: true, Message: big}))
	require.ErrorIs(t, receive(t, refused, "EventMessageRefused for the explicit channel's return"), leveret.ErrMessageTooLarge)
}
