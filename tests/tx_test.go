package tests

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
	"github.com/leveret-mq/leveret/tx"
)

// Acceptance tests of the tx package: rollback, commit of publishes and
// acks together, barriers, and failures.

// txNew opens a transaction channel, closed when the test ends.
func txNew(t *testing.T, c *leveret.Client) *tx.Tx {
	t.Helper()
	x, err := tx.New(testContext(t), c)
	require.NoError(t, err)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		x.Close(cctx)
	})
	return x
}

// txCount is the queue's ready-message count now (passive declare).
func txCount(t *testing.T, c *leveret.Client, q string) uint32 {
	t.Helper()
	ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}).Wait(testContext(t))
	require.NoError(t, err)
	return ok.MessageCount
}

// txQueueState asks the broker (rabbitmqctl) for the queue's ready and
// unacknowledged message counts.
func txQueueState(t *testing.T, q string) (ready, unacked int) {
	t.Helper()
	var list []struct {
		Name    string `json:"name"`
		Ready   int    `json:"messages_ready"`
		Unacked int    `json:"messages_unacknowledged"`
	}
	out := ctl(t, "list_queues", "-p", testVhost(t), "name", "messages_ready", "messages_unacknowledged", "--formatter", "json")
	require.NoError(t, json.Unmarshal([]byte(out), &list), "rabbitmqctl list_queues: %s", out)
	for _, e := range list {
		if e.Name == q {
			return e.Ready, e.Unacked
		}
	}
	require.Failf(t, "queue not listed", "%s", q)
	return 0, 0
}

func txMsg(q, body string) ops.Publish {
	return ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte(body)}}
}

// A rollback leaves the queue as it was; a commit makes the publishes
// visible, and nothing of the rolled-back transaction.
func TestTxRollbackThenCommit(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	x := txNew(t, c)

	for _, b := range []string{"r1", "r2", "r3"} {
		require.NoError(t, leveret.WaitAll(ctx, x.Publish(ctx, txMsg(q, b))))
	}
	_, err := x.Rollback().Wait(ctx)
	require.NoError(t, err)
	assert.Zero(t, txCount(t, c, q), "after rollback")

	for _, b := range []string{"c1", "c2"} {
		x.Publish(ctx, txMsg(q, b))
	}
	time.Sleep(100 * time.Millisecond) // give the broker time to (wrongly) route them
	assert.Zero(t, txCount(t, c, q), "before commit")
	_, err = x.Commit().Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(2), cfWaitCount(t, c, q, 2), "after commit")

	for _, want := range []string{"c1", "c2"} {
		g, err := c.Get(ops.Get{Queue: q, NoAck: true}).Wait(ctx)
		require.NoError(t, err)
		require.False(t, g.Empty())
		assert.Equal(t, want, string(g.Delivery.Body))
	}
}

// Publishes and an ack in one transaction take effect together at commit:
// before it, the queue is unchanged.
func TestTxCommitPublishesAndAckTogether(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	_, err := c.Publish(ctx, txMsg(q, "old")).Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, uint32(1), cfWaitCount(t, c, q, 1))

	x := txNew(t, c)
	g, err := x.Channel().Get(ops.Get{Queue: q}).Wait(ctx)
	require.NoError(t, err)
	require.False(t, g.Empty())
	require.Equal(t, "old", string(g.Delivery.Body))

	require.NoError(t, leveret.WaitAll(ctx,
		x.Publish(ctx, txMsg(q, "new1")),
		x.Publish(ctx, txMsg(q, "new2")),
		x.Ack(g.Delivery)))
	time.Sleep(100 * time.Millisecond) // give the broker time to (wrongly) apply them
	ready, unacked := txQueueState(t, q)
	assert.Equal(t, [2]int{0, 1}, [2]int{ready, unacked}, "before commit: [ready unacked]")

	_, err = x.Commit().Wait(ctx)
	require.NoError(t, err)
	ready, unacked = txQueueState(t, q)
	assert.Equal(t, [2]int{2, 0}, [2]int{ready, unacked}, "after commit: [ready unacked]")

	// Closing the channel requeues nothing: the ack was committed.
	require.NoError(t, x.Close(ctx))
	assert.Equal(t, uint32(2), cfWaitCount(t, c, q, 2))
}

// An ack undone by a rollback can be made again, and a commit then removes
// the message; acking it a second time in the same transaction is refused
// locally rather than closing the channel.
func TestTxAckAgainAfterRollback(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	require.NoError(t, leveret.WaitAll(ctx, c.Publish(ctx, txMsg(q, "a")), c.Publish(ctx, txMsg(q, "b"))))
	require.Equal(t, uint32(2), cfWaitCount(t, c, q, 2))

	x := txNew(t, c)
	var ds []*leveret.Delivery
	for range 2 {
		g, err := x.Channel().Get(ops.Get{Queue: q}).Wait(ctx)
		require.NoError(t, err)
		require.False(t, g.Empty())
		require.Same(t, x.Channel(), g.Delivery.Channel())
		ds = append(ds, g.Delivery)
	}
	_, err := x.Channel().Ack(ops.Ack{DeliveryTag: ds[1].DeliveryTag, Multiple: true}).Wait(ctx)
	require.NoError(t, err)
	_, err = x.Ack(ds[0]).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag, "acked by the multiple ack already")

	_, err = x.Rollback().Wait(ctx)
	require.NoError(t, err)
	ready, unacked := txQueueState(t, q)
	assert.Equal(t, [2]int{0, 2}, [2]int{ready, unacked}, "after rollback: [ready unacked]")

	require.NoError(t, leveret.WaitAll(ctx, x.Ack(ds[0]), x.Ack(ds[1])))
	_, err = x.Commit().Wait(ctx)
	require.NoError(t, err)
	_, err = x.Ack(ds[0]).Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag, "committed ack")
	ready, unacked = txQueueState(t, q)
	assert.Equal(t, [2]int{0, 0}, [2]int{ready, unacked}, "after commit: [ready unacked]")
	require.NoError(t, x.Err())
}

// Commit and Rollback are barriers: a publish issued right behind a commit
// belongs to the next transaction, and a rollback issued behind it
// discards it.
func TestTxBarrier(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	x := txNew(t, c)

	const rounds = 20
	var ws []leveret.Waiter
	for range rounds {
		ws = append(ws,
			x.Publish(ctx, txMsg(q, "kept")),
			x.Commit(),
			x.Publish(ctx, txMsg(q, "dropped")),
			x.Rollback())
	}
	require.NoError(t, leveret.WaitAll(ctx, ws...))
	assert.Equal(t, uint32(rounds), txCount(t, c, q))
	for range rounds {
		g, err := c.Get(ops.Get{Queue: q, NoAck: true}).Wait(ctx)
		require.NoError(t, err)
		require.False(t, g.Empty())
		require.Equal(t, "kept", string(g.Delivery.Body))
	}
}

// A commit behind a failing operation fails with the cause (the broker
// discarded it), and a commit on the closed channel fails with the cause at
// once; nothing was committed.
func TestTxCommitOnClosedChannel(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	x := txNew(t, c)

	x.Publish(ctx, txMsg(q, "lost"))
	x.Publish(ctx, ops.Publish{Exchange: uniqueName(t, "missing"), RoutingKey: q})
	_, err := x.Commit().Wait(ctx)
	require.Error(t, err)
	require.ErrorIs(t, err, leveret.ErrNotFound)
	require.ErrorIs(t, err, leveret.ErrNotExecuted)
	require.ErrorAs(t, err, new(*leveret.ChannelError))

	late := x.Commit()
	requireSettledNow(t, late, "commit on a closed channel")
	require.ErrorIs(t, late.Err(), leveret.ErrNotFound)
	require.ErrorIs(t, x.Rollback().Err(), leveret.ErrNotFound)
	// The channel's Done/Err may trail the failed promises by a moment
	// (the root fails pending operations before it marks the channel ended).
	select {
	case <-x.Channel().Done():
	case <-ctx.Done():
		require.FailNow(t, "the channel did not end")
	}
	require.ErrorIs(t, x.Err(), leveret.ErrNotFound)
	assert.Zero(t, txCount(t, c, q), "nothing committed")

	// After Close, operations fail with ErrClosed.
	y := txNew(t, c)
	require.NoError(t, y.Close(ctx))
	require.ErrorIs(t, y.Commit().Err(), leveret.ErrClosed)
}

// Begin uses a channel the caller opened and leaves it open on Close.
func TestTxBeginOnOwnChannel(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	x, err := tx.Begin(ctx, ch)
	require.NoError(t, err)
	require.Same(t, ch, x.Channel())
	x.Publish(ctx, txMsg(q, "a"))
	_, err = x.Commit().Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, x.Close(ctx))
	require.NoError(t, ch.Err(), "Close leaves a Begin channel open")
	assert.Equal(t, uint32(1), txCount(t, c, q))
	require.NoError(t, ch.Close(ctx))
}

// A delivery received on another channel cannot join the transaction: Ack
// refuses it without sending anything, and the delivery stays ackable
// where it came from.
func TestTxRefusesForeignDelivery(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q := cfQueue(t, c, nil)
	_, err := c.Publish(ctx, txMsg(q, "x")).Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, uint32(1), cfWaitCount(t, c, q, 1))

	other, err := c.Channel(ctx)
	require.NoError(t, err)
	g, err := other.Get(ops.Get{Queue: q}).Wait(ctx)
	require.NoError(t, err)
	require.False(t, g.Empty())

	x := txNew(t, c)
	_, err = x.Ack(g.Delivery).Wait(ctx)
	require.ErrorIs(t, err, tx.ErrForeignDelivery)
	_, err = x.Nack(nil, ops.Nack{}).Wait(ctx)
	require.ErrorIs(t, err, tx.ErrForeignDelivery)
	_, err = g.Delivery.Ack().Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, other.Close(ctx))
	require.NoError(t, x.Err())
}
