package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

const (
	testTimeout = 2 * time.Minute
	failoverMax = 5 * time.Second // the bound on resuming after a node stops
	flowRate    = 500             // msg/s published during the fault tests
)

func quorumQueue(name string) ops.QueueDeclare {
	return ops.QueueDeclare{Queue: name, Durable: true, Args: ops.Table{"x-queue-type": "quorum"}}
}

// deleteQueue removes q through whichever node answers, when the test ends.
func deleteQueue(t *testing.T, q string) {
	atEnd(t, "deleting "+q, func(ctx context.Context, c *leveret.Client) error {
		_, err := c.QueueDelete(ops.QueueDelete{Queue: q}).Wait(ctx)
		return err
	})
}

// atEnd runs fn, when the test ends, on a client of whichever node
// answers, and logs what failed.
func atEnd(t *testing.T, what string, fn func(context.Context, *leveret.Client) error) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := leveret.Dial(ctx, "", leveret.WithFailover(urls(0)...), leveret.WithReconnect(nil))
		if err == nil {
			err = fn(ctx, c)
			c.Close(ctx)
		}
		if err != nil {
			t.Logf("%s: %v", what, err)
		}
	})
}

// 1. A quorum queue with a confirmed publisher (republish on) and a
// consumer running; the node the client is connected to stops. The client
// fails over to another node, publishing and consuming resume with no user
// code within failoverMax, no confirmed message is lost, and every message
// is consumed at least once.
func TestFailoverConnectedNodeStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, log := dialCluster(t, ctx, 0)
	queue := uniqueName(t, "q")
	deleteQueue(t, queue)
	_, err := c.QueueDeclare(quorumQueue(queue)).Wait(ctx)
	require.NoError(t, err)
	on := log.connectedTo(t)
	require.Equal(t, nodes[0], on)

	f := startFlow(t, ctx, c, queue, flowRate, 100)
	time.Sleep(time.Second)
	stopAt := time.Now()
	stopNode(t, on)
	_, discAt := log.wait(t, leveret.EventDisconnected, 1, failoverMax)
	_, recAt := log.wait(t, leveret.EventRecovered, 1, failoverMax)
	now := log.connectedTo(t)
	require.NotEqual(t, on, now, "reconnected to the stopped node")
	confirmedAt, deliveredAt := f.resumed(f.boundary(discAt), failoverMax)
	resume := max(confirmedAt.Sub(stopAt), deliveredAt.Sub(stopAt))
	t.Logf("stopped %s: disconnected after %v, recovered on %s after %v; confirms and deliveries resumed %v after the stop began",
		on.name, discAt.Sub(stopAt), now.name, recAt.Sub(stopAt), resume)
	require.Less(t, resume, failoverMax)

	time.Sleep(time.Second)
	published, dups := f.finish(time.Minute)
	t.Logf("%d messages published and confirmed, all consumed; %d duplicate deliveries, %d stale acks refused", published, dups, f.ackErrs)
}

// 2. The quorum queue's leader stops while the client is connected to a
// follower: the client needs no reconnect, confirms keep flowing once the
// new leader is elected, and nothing is lost.
func TestFailoverQueueLeaderStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	queue := uniqueName(t, "q")
	deleteQueue(t, queue)
	// Declared through lc1: a quorum queue's leader starts on the node
	// the declaring connection is on (queue_leader_locator client-local).
	setup, _ := dialCluster(t, ctx, 0, leveret.WithReconnect(nil))
	_, err := setup.QueueDeclare(quorumQueue(queue)).Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, setup.Close(ctx))
	leader := leaderOf(t, nodes[1], queue)

	c, log := dialCluster(t, ctx, 1)
	on := log.connectedTo(t)
	require.NotEqual(t, leader, on, "the client should be on a follower")
	f := startFlow(t, ctx, c, queue, flowRate, 100)
	time.Sleep(time.Second)
	stopAt := time.Now()
	stopNode(t, leader)
	stopped := time.Now()
	confirmedAt, deliveredAt := f.resumed(f.boundary(stopped), failoverMax)
	newLeader := leaderOf(t, on, queue)
	require.NotEqual(t, leader, newLeader)
	t.Logf("stopped leader %s (stop_app took %v); new leader %s; the client on %s resumed confirms %v and deliveries %v after the stop began",
		leader.name, stopped.Sub(stopAt), newLeader.name, on.name, confirmedAt.Sub(stopAt), deliveredAt.Sub(stopAt))
	time.Sleep(time.Second)
	published, dups := f.finish(time.Minute)
	disc, _ := log.of(leveret.EventDisconnected)
	require.Empty(t, disc, "the client reconnected though its node stayed up")
	t.Logf("%d messages published and confirmed, all consumed; %d duplicate deliveries", published, dups)
}

// 4. Node loss during start-up: the first URL's node is stopped, and Dial
// reaches the next one.
func TestFailoverDialFirstNodeDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stopNode(t, nodes[0])
	start := time.Now()
	c, log := dialCluster(t, ctx, 0)
	took := time.Since(start)
	on := log.connectedTo(t)
	require.Equal(t, nodes[1], on)
	queue := uniqueName(t, "q")
	deleteQueue(t, queue)
	_, err := c.QueueDeclare(quorumQueue(queue)).Wait(ctx)
	require.NoError(t, err)
	_, err = c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("hello")}}).Wait(ctx)
	require.NoError(t, err)
	r, err := c.Get(ops.Get{Queue: queue, NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	require.False(t, r.Empty())
	require.Equal(t, "hello", string(r.Delivery.Body))
	t.Logf("with %s stopped, Dial reached %s in %v", nodes[0].name, on.name, took)
}

// 5. A classic (not replicated) durable queue lives on the node that
// stops: its recovery fails (its home node is down) and the topology
// recovery event names it, while every other entity (an exchange, a
// quorum queue, their binding, a consumer) recovers.
func TestFailoverClassicQueueOnLostNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, log := dialCluster(t, ctx, 0)
	on := log.connectedTo(t)
	classic, quorum, exchange := uniqueName(t, "classic"), uniqueName(t, "quorum"), uniqueName(t, "x")
	deleteQueue(t, classic)
	deleteQueue(t, quorum)
	atEnd(t, "deleting "+exchange, func(ctx context.Context, c *leveret.Client) error {
		_, err := c.ExchangeDelete(ops.ExchangeDelete{Exchange: exchange}).Wait(ctx)
		return err
	})
	c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: exchange, Kind: ops.Direct})
	c.QueueDeclare(ops.QueueDeclare{Queue: classic, Durable: true})
	c.QueueDeclare(quorumQueue(quorum))
	c.QueueBind(ops.QueueBind{Queue: quorum, Exchange: exchange, RoutingKey: "k"})
	_, err := c.QueueBind(ops.QueueBind{Queue: classic, Exchange: exchange, RoutingKey: "k"}).Wait(ctx)
	require.NoError(t, err)
	cs, err := c.Consume(ops.Consume{Queue: quorum, NoAck: true}).Wait(ctx)
	require.NoError(t, err)

	stopNode(t, on)
	ev, _ := log.wait(t, leveret.EventRecovered, 1, failoverMax)
	rep := ev.Recovery
	require.NotNil(t, rep)
	t.Logf("recovered on %s: %d exchanges, %d queues, %d bindings, %d consumers; failed: %v",
		log.connectedTo(t).name, rep.Exchanges, rep.Queues, rep.Bindings, rep.Consumers, rep.Failed)
	require.NotEmpty(t, rep.Failed)
	for _, err := range rep.Failed {
		require.Contains(t, err.Error(), classic, "only the classic queue's entities may fail")
	}
	require.ErrorIs(t, rep.Failed[0], leveret.ErrNotFound, "RabbitMQ answers 404: the queue's home node is down")
	require.GreaterOrEqual(t, rep.Exchanges, 1)
	require.GreaterOrEqual(t, rep.Queues, 1)
	require.GreaterOrEqual(t, rep.Bindings, 1)
	require.Equal(t, 1, rep.Consumers)

	// What recovered works: a message to the exchange reaches the quorum
	// queue's consumer on the same Deliveries channel. The exchange still
	// routes it to the classic queue too, whose node is down: RabbitMQ 3.10
	// confirms the publish, 4.x nacks it (not every queue took it).
	_, err = c.Publish(ctx, ops.Publish{Exchange: exchange, RoutingKey: "k", Message: ops.Message{Body: []byte("after")}}).Wait(ctx)
	if series == "3.10" {
		require.NoError(t, err)
	} else {
		require.ErrorIs(t, err, leveret.ErrNacked, "RabbitMQ 4.x nacks a publish routed to a queue that is down")
	}
	select {
	case d := <-cs.Deliveries():
		require.Equal(t, "after", string(d.Body))
	case <-ctx.Done():
		t.Fatal("no delivery on the recovered consumer")
	}
}
