package tests

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// Acceptance tests of the topology foundation: pipelining, failure
// isolation, abandoned waits, exchange kinds and arguments, and the client
// pool's cross-channel ordering. Dial, close and broker-initiated failures
// are in connection_test.go.

// Issuing 1,000 client-level declares takes a small fraction of the time
// until they have all completed: issuing never waits for the network.
//
// The ratio is measured within one batch. On a loaded 2-core machine (the
// broker, -race and other processes competing) the OS can stall the issuing
// thread for 100 ms or more at a single call while the median call takes
// microseconds; so a batch over the bound is retried, up to maxAttempts
// batches, and the best ratio counts. A client that waited for replies while
// issuing would fail every batch (its ratio is near 1).
func TestPipelinedQueueDeclares(t *testing.T) {
	const n, maxAttempts = 1000, 3
	c := dial(t)
	ctx := testContext(t)
	var all []string   // every queue this test declares
	t.Cleanup(func() { // the test deletes its queues itself when it passes
		if t.Failed() {
			deleteEntities(t, all, nil)
		}
	})

	type batch struct{ issued, total time.Duration }
	pipelined := func(attempt int) batch {
		names := uniqueNames(t, fmt.Sprintf("p%d-", attempt), n)
		all = append(all, names...)
		start := time.Now()
		ps := make([]*leveret.Promise[ops.QueueDeclareOk], n)
		for i, q := range names {
			ps[i] = c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true})
		}
		issued := time.Since(start)
		oks, err := leveret.Collect(ctx, ps)
		total := time.Since(start)
		require.NoError(t, err)
		for i, ok := range oks {
			require.Equal(t, names[i], ok.Queue)
			require.Zero(t, ok.MessageCount)
		}
		return batch{issued, total}
	}
	ratio := func(b batch) float64 { return float64(b.issued) / float64(b.total) }

	batches := []batch{pipelined(0)}
	best := batches[0]
	for len(batches) < maxAttempts && best.issued >= best.total/4 {
		t.Logf("pipelined batch %d: issue %v of total %v (issue/total %.4f): over 1/4, measuring again",
			len(batches), best.issued, best.total, ratio(best))
		b := pipelined(len(batches))
		batches = append(batches, b)
		if ratio(b) < ratio(best) {
			best = b
		}
	}

	seq := uniqueNames(t, "s", n)
	all = append(all, seq...)
	seqStart := time.Now()
	for _, q := range seq {
		ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, q, ok.Queue)
	}
	sequential := time.Since(seqStart)

	t.Logf("DECLARES: %d client-level queue.declare: pipelined issue %v, pipelined total %v (issue/total %.4f, best of %d batches); "+
		"sequential (Wait after each) %v; sequential/pipelined %.1fx",
		n, best.issued, best.total, ratio(best), len(batches), sequential, float64(sequential)/float64(best.total))
	assert.Less(t, best.issued, best.total/4, "issuing must not wait for replies: issue %v of total %v", best.issued, best.total)

	onBroker := brokerQueues(t)
	for _, q := range all {
		require.Contains(t, onBroker, q)
	}

	dels := make([]*leveret.Promise[ops.QueueDeleteOk], 0, len(all))
	for _, q := range all {
		dels = append(dels, c.QueueDelete(ops.QueueDelete{Queue: q}))
	}
	delOks, err := leveret.Collect(ctx, dels)
	require.NoError(t, err)
	require.Len(t, delOks, len(all))
	onBroker = brokerQueues(t)
	for _, q := range all {
		require.NotContains(t, onBroker, q)
	}
}

// Among 50 pipelined client-level declares, the one that conflicts with an
// existing queue fails with 406; the pool re-issues the declares the broker
// discarded behind it, so the other 49 succeed.
func TestClientDeclareConflictFailsAlone(t *testing.T) {
	const n, bad = 50, 10
	c := dial(t)
	ctx := testContext(t)
	conflict := uniqueName(t, "conflict")
	names := uniqueNames(t, "q", n-1)
	deleteAtEnd(t, append([]string{conflict}, names...), nil)

	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: conflict, Durable: true}).Wait(ctx)
	require.NoError(t, err)

	ps := make([]*leveret.Promise[ops.QueueDeclareOk], 0, n)
	want := make([]string, 0, n)
	for i := range n {
		switch {
		case i == bad:
			want = append(want, conflict)
			ps = append(ps, c.QueueDeclare(ops.QueueDeclare{Queue: conflict})) // durable false: inequivalent
		case i < bad:
			want = append(want, names[i])
			ps = append(ps, c.QueueDeclare(ops.QueueDeclare{Queue: names[i], Durable: true}))
		default:
			want = append(want, names[i-1])
			ps = append(ps, c.QueueDeclare(ops.QueueDeclare{Queue: names[i-1], Durable: true}))
		}
	}
	err = leveret.WaitAll(ctx, leveret.Waiters(ps)...)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed, "WaitAll returns the only failure")

	for i, p := range ps {
		ok, err := p.Wait(ctx)
		if i == bad {
			require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
			var ce *leveret.ChannelError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, leveret.ReplyCode(406), ce.Code)
			assert.Equal(t, uint16(50), ce.ClassID, "queue class")
			assert.Equal(t, uint16(10), ce.MethodID, "queue.declare")
			assert.NotErrorIs(t, err, leveret.ErrNotExecuted, "the failing declare itself was executed")
			continue
		}
		require.NoError(t, err, "declare %d (%s)", i, want[i])
		require.Equal(t, want[i], ok.Queue)
	}

	// The 49 exist: passive declares (pipelined) and the broker's own list agree.
	passive := make([]leveret.Waiter, len(names))
	for i, q := range names {
		passive[i] = c.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true})
	}
	require.NoError(t, leveret.WaitAll(ctx, passive...))
	onBroker := brokerQueues(t)
	for _, q := range names {
		require.Contains(t, onBroker, q)
	}
	require.Contains(t, onBroker, conflict)
	assert.True(t, onBroker[conflict].Durable, "the conflicting (non-durable) redeclare changed nothing")
}

// On an explicit channel the same conflict closes the channel: operations
// issued behind it were not executed, those before it were, and the channel
// stays failed while the client carries on.
func TestChannelDeclareConflictFailsFollowers(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	conflict := uniqueName(t, "conflict")
	before := uniqueNames(t, "before", 5)
	after := uniqueNames(t, "after", 5)
	extra := uniqueName(t, "extra")
	deleteAtEnd(t, append(append([]string{conflict, extra}, before...), after...), nil)

	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: conflict, Durable: true}).Wait(ctx)
	require.NoError(t, err)

	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, ch.Close(context.Background()), "closing an ended channel") })

	var ws []leveret.Waiter
	var bps, aps []*leveret.Promise[ops.QueueDeclareOk]
	for _, q := range before {
		bps = append(bps, ch.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}))
	}
	badP := ch.QueueDeclare(ops.QueueDeclare{Queue: conflict})
	for _, q := range after {
		aps = append(aps, ch.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}))
	}
	ws = append(append(append(ws, leveret.Waiters(bps)...), badP), leveret.Waiters(aps)...)
	err = leveret.WaitAll(ctx, ws...)
	// Every failure, in issue order: the conflict first, then each declare
	// discarded behind it (not executed), each naming its queue.
	first := leveret.FirstError(err)
	require.ErrorIs(t, first, leveret.ErrPreconditionFailed, "the first failure in issue order is the conflict")
	assert.NotErrorIs(t, first, leveret.ErrNotExecuted)
	assert.ErrorIs(t, err, leveret.ErrNotExecuted, "the declares behind it are reported too")
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 1+len(after), "one line per failed declare")
	for i, q := range after {
		assert.Contains(t, lines[1+i], strconv.Quote(q))
	}

	for i, p := range bps {
		ok, err := p.Wait(ctx)
		require.NoError(t, err, "declare before the conflict")
		require.Equal(t, before[i], ok.Queue)
	}
	_, err = badP.Wait(ctx)
	var ce *leveret.ChannelError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, leveret.ReplyCode(406), ce.Code)
	assert.Equal(t, "queue.declare", ce.Method())
	assert.NotErrorIs(t, err, leveret.ErrNotExecuted)
	require.ErrorIs(t, ch.Err(), leveret.ErrPreconditionFailed, "the channel's reason is set before its operations fail")
	for _, p := range aps {
		_, err := p.Wait(ctx)
		require.ErrorIs(t, err, leveret.ErrNotExecuted, "declare behind the conflict")
		require.ErrorIs(t, err, leveret.ErrPreconditionFailed, "ErrNotExecuted wraps the cause")
	}

	select {
	case <-ch.Done():
	case <-ctx.Done():
		require.FailNow(t, "the channel did not end after the broker closed it")
	}
	var chErr *leveret.ChannelError
	require.ErrorAs(t, ch.Err(), &chErr)
	assert.Equal(t, leveret.ReplyCode(406), chErr.Code)

	late := ch.QueueDeclare(ops.QueueDeclare{Queue: extra, Durable: true})
	requireSettledNow(t, late, "declare on a failed channel")
	require.ErrorIs(t, late.Err(), leveret.ErrPreconditionFailed)
	lateX := ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: extra})
	requireSettledNow(t, lateX, "exchange declare on a failed channel")
	require.ErrorIs(t, lateX.Err(), leveret.ErrPreconditionFailed)

	onBroker := brokerQueues(t)
	for _, q := range before {
		assert.Contains(t, onBroker, q, "executed before the conflict")
	}
	for _, q := range append(after, extra) {
		assert.NotContains(t, onBroker, q, "discarded by the broker, so it must not exist")
	}

	ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: extra, Durable: true}).Wait(ctx)
	require.NoError(t, err, "the client still works")
	require.Equal(t, extra, ok.Queue)
}

// Giving up a Wait stops the wait, not the operation: the channel stays in
// step and the abandoned promise still settles.
func TestAbandonedWait(t *testing.T) {
	c := dial(t)
	ctx := testContext(t)
	q1, q2 := uniqueName(t, "abandoned"), uniqueName(t, "next")
	deleteAtEnd(t, []string{q1, q2}, nil)

	ch, err := c.Channel(ctx)
	require.NoError(t, err)

	p1 := ch.QueueDeclare(ops.QueueDeclare{Queue: q1, Durable: true})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p1.Wait(cancelled)
	require.ErrorIs(t, err, context.Canceled)

	ok2, err := ch.QueueDeclare(ops.QueueDeclare{Queue: q2, Durable: true}).Wait(ctx)
	require.NoError(t, err, "the next operation on the channel")
	require.Equal(t, q2, ok2.Queue)

	select {
	case <-p1.Done():
	default:
		require.FailNow(t, "the abandoned declare was not settled although a later reply arrived")
	}
	ok1, err := p1.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, q1, ok1.Queue, "the abandoned promise got its own reply, not the next one's")
	require.NoError(t, ch.Err())
	require.NoError(t, ch.Close(ctx))
	// Done is awaited because Close can return a moment before the channel
	// records its end (close-ok settles Close first); see the report.
	select {
	case <-ch.Done():
	case <-ctx.Done():
		require.FailNow(t, "the channel did not end after Close")
	}
	require.ErrorIs(t, ch.Err(), leveret.ErrClosed)
}

// All four exchange kinds, queue and exchange-to-exchange bindings (with
// arguments for headers), passive declares, server-named queues, argument
// tables, purge and delete.
func TestTopologyKindsAndArguments(t *testing.T) {
	c := dial(t)

	t.Run("exchange kinds and bindings", func(t *testing.T) {
		ctx := testContext(t)
		kinds := []ops.ExchangeKind{ops.Direct, ops.Fanout, ops.Topic, ops.Headers}
		xs := make(map[ops.ExchangeKind]string)
		var names []string
		for _, k := range kinds {
			xs[k] = uniqueName(t, string(k))
			names = append(names, xs[k])
		}
		q := uniqueName(t, "q")
		deleteAtEnd(t, []string{q}, names)

		ws := []leveret.Waiter{c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true})}
		for _, k := range kinds {
			ws = append(ws, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: xs[k], Kind: k, AutoDelete: false}))
		}
		headerArgs := ops.Table{"x-match": "all", "format": "pdf", "version": int32(2)}
		ws = append(ws,
			c.QueueBind(ops.QueueBind{Queue: q, Exchange: xs[ops.Direct], RoutingKey: "rk"}),
			c.QueueBind(ops.QueueBind{Queue: q, Exchange: xs[ops.Fanout]}),
			c.QueueBind(ops.QueueBind{Queue: q, Exchange: xs[ops.Topic], RoutingKey: "a.*.c"}),
			c.QueueBind(ops.QueueBind{Queue: q, Exchange: xs[ops.Headers], Args: headerArgs}),
			c.ExchangeBind(ops.ExchangeBind{Destination: xs[ops.Fanout], Source: xs[ops.Direct], RoutingKey: "e2e"}),
		)
		require.NoError(t, leveret.WaitAll(ctx, ws...))

		// Passive declares of what exists succeed; a different kind is refused.
		for _, k := range kinds {
			_, err := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: xs[k], Passive: true}).Wait(ctx)
			require.NoError(t, err, "passive declare of the %s exchange", k)
		}
		_, err := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: xs[ops.Direct], Kind: ops.Topic}).Wait(ctx)
		require.ErrorIs(t, err, leveret.ErrPreconditionFailed, "redeclare with another kind")

		bs := brokerBindings(t, names...)
		find := func(src, dst string) *bindingInfo {
			for i := range bs {
				if bs[i].Source == src && bs[i].Destination == dst {
					return &bs[i]
				}
			}
			return nil
		}
		for k, key := range map[ops.ExchangeKind]string{ops.Direct: "rk", ops.Fanout: "", ops.Topic: "a.*.c", ops.Headers: ""} {
			b := find(xs[k], q)
			if assert.NotNil(t, b, "binding %s -> queue", k) {
				assert.Equal(t, "queue", b.Kind)
				assert.Equal(t, key, b.RoutingKey)
			}
		}
		if hb := find(xs[ops.Headers], q); hb != nil {
			for key, want := range map[string]any{"x-match": "all", "format": "pdf", "version": float64(2)} {
				v, ok := hb.Arguments.get(key)
				assert.True(t, ok, "headers binding argument %q", key)
				assert.Equal(t, want, v, "headers binding argument %q", key)
			}
		}
		e2e := find(xs[ops.Direct], xs[ops.Fanout])
		if assert.NotNil(t, e2e, "exchange-to-exchange binding") {
			assert.Equal(t, "exchange", e2e.Kind)
			assert.Equal(t, "e2e", e2e.RoutingKey)
		}

		require.NoError(t, leveret.WaitAll(ctx,
			c.QueueUnbind(ops.QueueUnbind{Queue: q, Exchange: xs[ops.Headers], Args: headerArgs}),
			c.ExchangeUnbind(ops.ExchangeUnbind{Destination: xs[ops.Fanout], Source: xs[ops.Direct], RoutingKey: "e2e"}),
		))
		bs = brokerBindings(t, names...)
		assert.Nil(t, find(xs[ops.Headers], q), "headers binding removed")
		assert.Nil(t, find(xs[ops.Direct], xs[ops.Fanout]), "exchange binding removed")
		assert.NotNil(t, find(xs[ops.Topic], q), "other bindings stay")
	})

	t.Run("passive declare of a missing queue", func(t *testing.T) {
		ctx := testContext(t)
		ch, err := c.Channel(ctx)
		require.NoError(t, err)
		_, err = ch.QueueDeclare(ops.QueueDeclare{Queue: uniqueName(t, "missing"), Passive: true}).Wait(ctx)
		require.ErrorIs(t, err, leveret.ErrNotFound)
		var ce *leveret.ChannelError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, leveret.ReplyCode(404), ce.Code)
		assert.Equal(t, "NOT_FOUND", ce.Code.String())
		// The error names its operation and queue, then the broker's answer.
		assert.True(t, strings.HasPrefix(err.Error(), `queue.declare "leveret-test.`), "error text %q", err.Error())
		assert.Contains(t, err.Error(), ": amqp: channel closed: 404 NOT_FOUND")
		var oe *leveret.OperationError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, "queue.declare", oe.Op)
		<-ch.Done()
		require.ErrorIs(t, ch.Err(), leveret.ErrNotFound)
		require.NoError(t, ch.Close(ctx), "closing an ended channel")
	})

	t.Run("server-named queues", func(t *testing.T) {
		ctx := testContext(t)
		ok, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(ok.Queue, "amq.gen-"), "client-level server-named queue %q", ok.Queue)
		ch, err := c.Channel(ctx)
		require.NoError(t, err)
		ok2, err := ch.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(ok2.Queue, "amq.gen-"), "server-named queue %q", ok2.Queue)
		assert.NotEqual(t, ok.Queue, ok2.Queue)
		onBroker := brokerQueues(t)
		assert.Contains(t, onBroker, ok.Queue)
		assert.Contains(t, onBroker, ok2.Queue)
		require.NoError(t, ch.Close(ctx))
	})

	t.Run("argument tables", func(t *testing.T) {
		ctx := testContext(t)
		classic, quorum := uniqueName(t, "classic"), uniqueName(t, "quorum")
		deleteAtEnd(t, []string{classic, quorum}, nil)
		classicArgs := ops.Table{"x-message-ttl": int32(60000), "x-max-length": int32(100), "x-max-length-bytes": int64(1 << 20)}
		quorumArgs := ops.Table{"x-queue-type": "quorum", "x-max-length": int32(10)}
		require.NoError(t, leveret.WaitAll(ctx,
			c.QueueDeclare(ops.QueueDeclare{Queue: classic, Durable: true, Args: classicArgs}),
			c.QueueDeclare(ops.QueueDeclare{Queue: quorum, Durable: true, Args: quorumArgs}),
		))
		// Redeclaring with equal arguments succeeds, with another value fails.
		require.NoError(t, leveret.WaitAll(ctx,
			c.QueueDeclare(ops.QueueDeclare{Queue: classic, Durable: true, Args: classicArgs}),
			c.QueueDeclare(ops.QueueDeclare{Queue: quorum, Durable: true, Args: quorumArgs}),
		))
		_, err := c.QueueDeclare(ops.QueueDeclare{Queue: classic, Durable: true, Args: ops.Table{"x-message-ttl": int32(1000)}}).Wait(ctx)
		require.ErrorIs(t, err, leveret.ErrPreconditionFailed)

		onBroker := brokerQueues(t)
		require.Contains(t, onBroker, classic)
		require.Contains(t, onBroker, quorum)
		assert.Equal(t, "classic", onBroker[classic].Type)
		assert.Equal(t, "quorum", onBroker[quorum].Type)
		assert.True(t, onBroker[quorum].Durable)
		for key, want := range map[string]float64{"x-message-ttl": 60000, "x-max-length": 100, "x-max-length-bytes": 1 << 20} {
			v, ok := onBroker[classic].Arguments.get(key)
			assert.True(t, ok, "argument %q", key)
			assert.Equal(t, want, v, "argument %q", key)
		}
	})

	t.Run("purge and delete counts", func(t *testing.T) {
		ctx := testContext(t)
		q := uniqueName(t, "q")
		deleteAtEnd(t, []string{q}, nil)
		ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, ops.QueueDeclareOk{Queue: q, MessageCount: 0, ConsumerCount: 0}, ok)
		purged, err := c.QueuePurge(ops.QueuePurge{Queue: q}).Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, ops.QueuePurgeOk{MessageCount: 0}, purged)
		deleted, err := c.QueueDelete(ops.QueueDelete{Queue: q, IfUnused: true, IfEmpty: true}).Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, ops.QueueDeleteOk{MessageCount: 0}, deleted)
		_, err = c.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}).Wait(ctx)
		require.ErrorIs(t, err, leveret.ErrNotFound, "the queue is gone")
		_, err = c.QueuePurge(ops.QueuePurge{Queue: q}).Wait(ctx)
		require.ErrorIs(t, err, leveret.ErrNotFound, "purging a missing queue")
	})
}

// A bind issued right behind the declares of its queue and exchange waits
// for both, although the pool may put the three on different channels.
func TestClientOrderingAcrossPool(t *testing.T) {
	const pairs = 20
	c := dial(t)
	ctx := testContext(t)
	qs := uniqueNames(t, "q", pairs)
	xs := uniqueNames(t, "x", pairs)
	deleteAtEnd(t, qs, xs)

	var ws []leveret.Waiter
	for i := range pairs {
		ws = append(ws,
			c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: xs[i], Kind: ops.Topic}),
			c.QueueDeclare(ops.QueueDeclare{Queue: qs[i], Durable: true}),
			c.QueueBind(ops.QueueBind{Queue: qs[i], Exchange: xs[i], RoutingKey: "k." + qs[i]}),
		)
		if i > 0 { // two exchanges, possibly on two other channels
			ws = append(ws, c.ExchangeBind(ops.ExchangeBind{Destination: xs[i], Source: xs[i-1], RoutingKey: "chain"}))
		}
	}
	require.NoError(t, leveret.WaitAll(ctx, ws...))
	for i, w := range ws {
		require.NoError(t, w.Err(), "operation %d", i)
	}

	bs := brokerBindings(t, append(append([]string{}, qs...), xs...)...)
	have := make(map[[2]string]string)
	for _, b := range bs {
		have[[2]string{b.Source, b.Destination}] = b.RoutingKey
	}
	for i := range pairs {
		key, ok := have[[2]string{xs[i], qs[i]}]
		assert.True(t, ok, "binding %s -> %s", xs[i], qs[i])
		assert.Equal(t, "k."+qs[i], key)
		if i > 0 {
			_, ok := have[[2]string{xs[i-1], xs[i]}]
			assert.True(t, ok, "exchange binding %s -> %s", xs[i-1], xs[i])
		}
	}

	// Pipelined deletes on the client, exchanges and queues interleaved.
	// Deleting bound exchanges at once on several channels crashes RabbitMQ
	// 3.10's channel (541 INTERNAL_ERROR, closing the connection); the pool
	// runs every delete on one channel, so this must pass.
	var dels []leveret.Waiter
	for i := range pairs {
		dels = append(dels, c.ExchangeDelete(ops.ExchangeDelete{Exchange: xs[i]}), c.QueueDelete(ops.QueueDelete{Queue: qs[i]}))
	}
	require.NoError(t, leveret.WaitAll(ctx, dels...))
	require.NoError(t, c.Err())
	assert.Empty(t, brokerBindings(t, append(append([]string{}, qs...), xs...)...))
	onBroker := brokerQueues(t)
	for _, q := range qs {
		assert.NotContains(t, onBroker, q)
	}
}
