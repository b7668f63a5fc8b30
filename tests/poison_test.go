package tests

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// Poison operations (issue 23, §1): RabbitMQ closes the whole connection
// for a declaration of an exchange type it does not know (503; 4.x closes
// only the channel, 406) and for a prefetch size (540). Each fails alone with the broker's error, costs at
// most two reconnects, and the client's other operations and consumers go
// on. Before, the client re-sent the operation on every new connection:
// 63 drops in 5 s, for ever.
func TestPoisonOperationsFailAlone(t *testing.T) {
	ctx, _, queue, log, c := recoverySetup(t, 2*opTimeout)
	exchanges := uniqueNames(t, "x", 20)
	delayed := uniqueName(t, "delayed")
	queues := uniqueNames(t, "q", 20)
	deleteAtEnd(t, queues, append(exchanges, delayed))

	cs, err := c.Consume(ops.Consume{Queue: queue}).Wait(ctx)
	require.NoError(t, err)
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.Qos(ops.Qos{PrefetchCount: 5}).Wait(ctx)
	require.NoError(t, err)

	// An unknown exchange type among 40 declarations in flight.
	var all []leveret.Waiter
	for i := range 10 {
		all = append(all, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: exchanges[i], Kind: "direct"}),
			c.QueueDeclare(ops.QueueDeclare{Queue: queues[i], Durable: true}))
	}
	poison := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: delayed, Kind: "x-delayed-message", Durable: true})
	for i := 10; i < 20; i++ {
		all = append(all, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: exchanges[i], Kind: "topic"}),
			c.QueueDeclare(ops.QueueDeclare{Queue: queues[i], Durable: true}))
	}
	_, err = poison.Wait(ctx)
	// RabbitMQ 3.10 closes the connection over it (503); 4.x only the
	// channel (406). Either way it fails alone.
	var ce *leveret.ConnectionError
	var che *leveret.ChannelError
	switch {
	case errors.As(err, &ce):
		require.ErrorIs(t, err, leveret.ErrCommandInvalid)
		require.Equal(t, "exchange.declare", ce.Method())
	case errors.As(err, &che):
		require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
		require.Equal(t, "exchange.declare", che.Method())
	default:
		t.Fatalf("the unknown exchange type failed with %v", err)
	}
	require.NoError(t, leveret.WaitAll(ctx, all...), "the declarations in flight with it")
	if ce != nil {
		log.waitRecovered(t, 1)
	}
	require.LessOrEqual(t, len(log.of(leveret.EventDisconnected)), 2, "reconnects for one poison declaration")

	// A prefetch size on an explicit channel.
	_, err = ch.Qos(ops.Qos{PrefetchCount: 5, PrefetchSize: 65536}).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNotImplemented)
	before := len(log.of(leveret.EventRecovered))
	log.waitRecovered(t, before+1)
	time.Sleep(200 * time.Millisecond) // long enough for a re-applied qos to close the connection again
	require.Equal(t, before+1, len(log.of(leveret.EventRecovered)), "the refused qos was re-applied")
	require.LessOrEqual(t, len(log.of(leveret.EventDisconnected)), 4)

	// The consumer and the channel work.
	requireDelivers(ctx, t, c, cs, queue, "the poison operations")
	_, err = ch.QueueDeclare(ops.QueueDeclare{Queue: queue, Passive: true}).Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.Err())
	require.False(t, errors.Is(c.Err(), leveret.ErrClosed))
}

// A transient non-exclusive queue on a broker that refuses them (RabbitMQ
// 4.x with its announced next defaults closes the connection with 541):
// the declaration fails alone within a second with the broker's error,
// among 20 others in flight; at most two more connections are made, none
// after, and the client's consumer goes on. Before, the client re-declared
// it on every new connection, for ever (about 12 reconnects a second).
// Brokers that permit such queues (3.10, or 4.x under its own defaults)
// lack the refusal: the test says so and skips there; make test runs it on
// 4.x with the next defaults.
func TestPoisonTransientQueue(t *testing.T) {
	if permitsTransientQueues(t) {
		t.Skip("this broker permits transient non-exclusive queues (RabbitMQ 3.10, or 4.x under its own defaults): nothing to refuse; the run on RabbitMQ 4.x with the next defaults tests it")
	}
	ctx, _, queue, log, c := recoverySetup(t, 2*opTimeout)
	queues := uniqueNames(t, "q", 20)
	transient := uniqueName(t, "transient")
	deleteAtEnd(t, append(queues, transient), nil)
	cs, err := c.Consume(ops.Consume{Queue: queue}).Wait(ctx)
	require.NoError(t, err)

	var all []leveret.Waiter
	for i := range 10 {
		all = append(all, c.QueueDeclare(ops.QueueDeclare{Queue: queues[i], Durable: true}))
	}
	start := time.Now()
	poison := c.QueueDeclare(ops.QueueDeclare{Queue: transient})
	for i := 10; i < 20; i++ {
		all = append(all, c.QueueDeclare(ops.QueueDeclare{Queue: queues[i], Durable: true}))
	}
	_, err = poison.Wait(ctx)
	var ce *leveret.ConnectionError
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, leveret.ErrInternalError)
	require.Less(t, time.Since(start), time.Second, "the refused declaration failed late")
	require.NoError(t, leveret.WaitAll(ctx, all...), "the declarations in flight with it")
	log.waitRecovered(t, 1)
	drops := len(log.of(leveret.EventDisconnected))
	require.LessOrEqual(t, drops, 2, "reconnects for one refused declaration")
	time.Sleep(2 * time.Second) // a storm would show here
	require.Equal(t, drops, len(log.of(leveret.EventDisconnected)), "the connection kept dropping")

	requireDelivers(ctx, t, c, cs, queue, "the refused declaration")
}

// permitsTransientQueues reports whether the test broker accepts a queue
// that is neither durable nor exclusive, on a connection of its own.
func permitsTransientQueues(t *testing.T) bool {
	t.Helper()
	ctx := testContext(t)
	probe, err := leveret.Dial(ctx, amqpURL(), leveret.WithReconnect(nil))
	require.NoError(t, err)
	defer probe.Close(context.Background())
	q := uniqueName(t, "probe")
	_, err = probe.QueueDeclare(ops.QueueDeclare{Queue: q, AutoDelete: true}).Wait(ctx)
	if err == nil {
		probe.QueueDelete(ops.QueueDelete{Queue: q}).Wait(ctx)
		return true
	}
	require.ErrorIs(t, err, leveret.ErrInternalError, "probing for transient queues")
	return false
}

// requireDelivers publishes one message to queue through c and requires cs
// to deliver it (then acks it): the consumer still works after what.
func requireDelivers(ctx context.Context, t *testing.T, c *leveret.Client, cs *leveret.Consumer, queue, after string) {
	t.Helper()
	_, err := c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("after")}}).Wait(ctx)
	require.NoError(t, err)
	select {
	case d := <-cs.Deliveries():
		require.Equal(t, "after", string(d.Body))
		_, err = d.Ack().Wait(ctx)
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatalf("the consumer got nothing after %s", after)
	}
}
