package tests

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
	"github.com/leveret-mq/leveret/tx"
)

// eventLog collects a client's connection events (WithEventHandler) and
// lets a test wait for the n-th recovery.
type eventLog struct {
	mu     sync.Mutex
	events []leveret.Event
	at     []time.Time // when each event arrived
	change chan struct{}
}

func newEventLog() *eventLog { return &eventLog{change: make(chan struct{}, 1)} }

func (l *eventLog) handle(e leveret.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
	select {
	case l.change <- struct{}{}:
	default:
	}
}

func (l *eventLog) of(kind leveret.EventKind) []leveret.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []leveret.Event
	for _, e := range l.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitRecovered waits until n recoveries have been reported and returns
// the n-th.
func (l *eventLog) waitRecovered(t *testing.T, n int) leveret.Event {
	t.Helper()
	return l.wait(t, leveret.EventRecovered, n)
}

// wait waits until n events of kind have been reported (they arrive on
// the client's dispatcher goroutine) and returns the n-th.
func (l *eventLog) wait(t *testing.T, kind leveret.EventKind, n int) leveret.Event {
	t.Helper()
	deadline := time.After(opTimeout)
	for {
		if got := l.of(kind); len(got) >= n {
			return got[n-1]
		}
		select {
		case <-l.change:
		case <-deadline:
			t.Fatalf("%v event %d not reported within %v; events: %v", kind, n, opTimeout, l.kinds())
		}
	}
}

// outages returns, for each disconnect followed by a recovery, the time
// between the two events.
func (l *eventLog) outages() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []time.Duration
	var start time.Time
	for i, e := range l.events {
		switch e.Kind {
		case leveret.EventDisconnected:
			start = l.at[i]
		case leveret.EventRecovered:
			if !start.IsZero() {
				out = append(out, l.at[i].Sub(start))
				start = time.Time{}
			}
		}
	}
	return out
}

func (l *eventLog) kinds() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, e.Kind.String())
	}
	return out
}

// forceClose closes the client's current connection from the broker side
// (rabbitmqctl close_connection), as an operator or a failing node would.
func forceClose(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for {
		pid := connectionPID(t, name)
		if pid != "" {
			if out, err := ctlErr("close_connection", pid, "recovery test"); err == nil {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("rabbitmqctl close_connection: %v: %s", err, out)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection %q not found", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// After a forced close the client reconnects by itself and re-declares
// what it recorded: an exclusive server-named queue (renamed, and the
// rename reported), its binding, and its consumer, which keeps delivering
// on the same Deliveries channel with the same tag. A delivery received
// before the drop is refused locally (ErrStaleDelivery) and comes again,
// redelivered. An exclusive queue declared on an explicit channel that was
// closed before the drop is recovered too: the record is the client's.
func TestRecoveryAfterForcedClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx := testContext(t)
	name := uniqueName(t, "conn")
	ex := uniqueName(t, "ex")
	deleteAtEnd(t, nil, []string{ex})
	log := newEventLog()
	c, err := leveret.Dial(ctx, amqpURL(), leveret.WithConnectionName(name), leveret.WithEventHandler(log.handle))
	require.NoError(t, err)
	defer func() {
		require.NoError(t, c.Close(context.Background()))
		goleak.VerifyNone(t, ignore)
	}()

	_, err = c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: ex, Kind: ops.Direct}).Wait(ctx)
	require.NoError(t, err)
	q, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
	_, err = c.QueueBind(ops.QueueBind{Queue: q.Queue, Exchange: ex, RoutingKey: "k"}).Wait(ctx)
	require.NoError(t, err)
	side := uniqueName(t, "side")
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ops.QueueDeclare{Queue: side, Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.Close(ctx))

	cs, err := c.Consume(ops.Consume{Queue: q.Queue, Prefetch: 10}).Wait(ctx)
	require.NoError(t, err)
	deliveries := cs.Deliveries()
	publish := func(body string) {
		t.Helper()
		_, err := c.Publish(ctx, ops.Publish{Exchange: ex, RoutingKey: "k", Message: ops.Message{Body: []byte(body)}}).Wait(ctx)
		require.NoError(t, err)
	}
	receive := func() *leveret.Delivery {
		t.Helper()
		select {
		case d, ok := <-deliveries:
			require.True(t, ok, "deliveries closed: %v", cs.Err())
			return d
		case <-ctx.Done():
			t.Fatal("no delivery")
			return nil
		}
	}
	publish("before")
	held := receive()
	require.Equal(t, "before", string(held.Body))

	forceClose(t, name)
	rec := log.waitRecovered(t, 1)
	require.Empty(t, rec.Recovery.Failed)
	newName, renamed := rec.Recovery.Renamed[q.Queue]
	require.True(t, renamed, "rename of %s not reported: %+v", q.Queue, rec.Recovery)
	require.NotEqual(t, q.Queue, newName)
	require.GreaterOrEqual(t, rec.Recovery.Queues, 2)
	require.Equal(t, 1, rec.Recovery.Exchanges)
	require.Equal(t, 1, rec.Recovery.Bindings)
	require.Equal(t, leveret.StateConnected, c.State())
	require.Nil(t, c.Err())
	require.Len(t, log.of(leveret.EventDisconnected), 1)
	require.ErrorIs(t, log.of(leveret.EventDisconnected)[0].Err, leveret.ErrConnectionForced)

	_, err = held.Ack().Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrStaleDelivery)

	publish("after")
	got := receive()
	require.Equal(t, "after", string(got.Body), "the exclusive queue's message was lost with it")
	require.Equal(t, cs.Tag(), got.ConsumerTag)
	_, err = got.Ack().Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, got.Channel().Err(), "the consumer runs on a live channel")

	queues := brokerQueues(t)
	_, sideThere := queues[side]
	require.True(t, sideThere, "queue %s declared on a closed channel was not recovered", side)
}

// Ten forced closes while a Client.Publish loop runs and a consumer acks:
// the loop has no recovery code, every publish's promise succeeds, and
// every message arrives at least once on the same Deliveries channel.
func TestRecoveryPublishAndConsumeAcrossCloses(t *testing.T) {
	ctx, name, queue, log, c := recoverySetup(t, 3*opTimeout)
	var err error
	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: 50}).Wait(ctx)
	require.NoError(t, err)

	const closes = 10
	var (
		seenMu sync.Mutex
		seen   = make(map[int]int)
		stale  int
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	published := make(chan int, 1)
	var totalKnown atomic.Int64
	totalKnown.Store(-1)
	allSeen := make(chan struct{})
	wg.Go(func() { // owner: this test; exits once every published message was seen, or ctx ends
		for {
			select {
			case d, ok := <-cs.Deliveries():
				if !ok {
					t.Errorf("deliveries closed: %v", cs.Err())
					return
				}
				id, _ := strconv.Atoi(string(d.Body))
				if _, err := d.Ack().Wait(ctx); errors.Is(err, leveret.ErrStaleDelivery) {
					stale++
				} else if err != nil {
					t.Errorf("ack: %v", err)
				}
				seenMu.Lock()
				seen[id]++
				n := len(seen)
				seenMu.Unlock()
				if int64(n) == totalKnown.Load() {
					close(allSeen)
					return
				}
			case <-time.After(50 * time.Millisecond):
				seenMu.Lock()
				n := len(seen)
				seenMu.Unlock()
				if int64(n) == totalKnown.Load() {
					close(allSeen)
					return
				}
			case <-ctx.Done():
				return
			}
		}
	})
	wg.Go(func() { // owner: this test; exits when stop is closed, after the last publish settles
		var ps []*leveret.Promise[struct{}]
		i := 0
		for ; ; i++ {
			select {
			case <-stop:
			default:
				ps = append(ps, c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
				if i%20 == 19 {
					time.Sleep(2 * time.Millisecond) // a steady stream across the closes
				}
				continue
			}
			break
		}
		for n, p := range ps {
			if _, err := p.Wait(ctx); err != nil {
				t.Errorf("publish %d failed: %v", n, err)
			}
		}
		published <- i
	})
	for i := 1; i <= closes; i++ {
		time.Sleep(150 * time.Millisecond)
		forceClose(t, name)
		log.waitRecovered(t, i)
	}
	close(stop)
	var total int
	select {
	case total = <-published:
	case <-ctx.Done():
		t.Fatal("publishes did not settle")
	}
	totalKnown.Store(int64(total))
	select {
	case <-allSeen:
	case <-ctx.Done():
		seenMu.Lock()
		t.Fatalf("saw %d of %d messages", len(seen), total)
	}
	wg.Wait()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	outages := log.outages()
	slices.Sort(outages)
	t.Logf("%d closes: %d messages, %d duplicates, %d stale acks; disconnect to recovered: median %v, max %v",
		closes, total, dups, stale, outages[len(outages)/2], outages[len(outages)-1])
	require.Equal(t, leveret.StateConnected, c.State())
}

// recoverySetup dials a client named for forceClose, recording its
// events, and declares a durable queue for the test (deleted at the end).
func recoverySetup(t *testing.T, timeout time.Duration) (context.Context, string, string, *eventLog, *leveret.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	name := uniqueName(t, "conn")
	queue := uniqueName(t, "q")
	deleteAtEnd(t, []string{queue}, nil)
	log := newEventLog()
	c := dial(t, leveret.WithConnectionName(name), leveret.WithEventHandler(log.handle))
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	return ctx, name, queue, log, c
}

// node2URL is the extra node that scripts/broker.sh starts for tests that
// stop a broker (make test starts it).
func node2URL() string {
	if u := os.Getenv("AMQP_URL_NODE2"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5673/%2f"
}

// node2Name is the extra node's Erlang name: $LEVERET_NODE2 (a bare name
// on this host), or leveret2.
func node2Name(t *testing.T) string {
	if n := os.Getenv("LEVERET_NODE2"); n != "" {
		return localNode(t, n)
	}
	return localNode(t, "leveret2")
}

// localNode is the Erlang node name of a node called name on this host.
func localNode(t *testing.T, name string) string {
	host, err := os.Hostname()
	require.NoError(t, err)
	host, _, _ = strings.Cut(host, ".")
	return name + "@" + host
}

// deadURL is an endpoint where nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return "amqp://guest:guest@" + addr + "/%2f"
}

// The broker stops (stop_app) for 8 s and starts again while a
// Client.Publish loop and a consumer run: everything resumes with no user
// code, every publish's promise succeeds, and every message arrives. The
// client was given three endpoints of which the first is dead: it connects
// to a live one, first and on every reconnect. A second client waiting out
// a long reconnect delay meanwhile closes at once.
func TestRecoveryBrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*opTimeout)
	defer cancel()
	node := node2Name(t)
	urls := []string{deadURL(t), node2URL(), node2URL()}
	log := newEventLog()
	c, err := leveret.Dial(ctx, "", leveret.WithFailover(urls...), leveret.WithEventHandler(log.handle))
	require.NoError(t, err, "dial node %s (make test starts it: scripts/broker.sh node leveret2 5673)", node)
	defer func() { require.NoError(t, c.Close(context.Background())) }()
	node2, err := url.Parse(node2URL())
	require.NoError(t, err)
	require.Contains(t, log.wait(t, leveret.EventConnected, 1).Endpoint, node2.Host)

	waiting, err := leveret.Dial(ctx, node2URL(), leveret.WithReconnect(&leveret.Backoff{Initial: time.Hour, Max: time.Hour}))
	require.NoError(t, err)

	queue := uniqueName(t, "q")
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	defer func() { c.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(ctx) }()
	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: 20}).Wait(ctx)
	require.NoError(t, err)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	published := make(chan int, 1)
	wg.Go(func() { // owner: this test; exits when stop is closed, after its publishes settle
		var ps []*leveret.Promise[struct{}]
		i := 0
	loop:
		for ; ; i++ {
			select {
			case <-stop:
				break loop
			case <-time.After(5 * time.Millisecond):
			}
			pctx, pcancel := context.WithTimeout(ctx, opTimeout)
			ps = append(ps, c.Publish(pctx, ops.Publish{RoutingKey: queue,
				Message: ops.Message{Body: []byte(strconv.Itoa(i)), DeliveryMode: ops.Persistent}}))
			pcancel()
		}
		for n, p := range ps {
			if _, err := p.Wait(ctx); err != nil {
				t.Errorf("publish %d failed: %v", n, err)
			}
		}
		published <- i
	})
	time.Sleep(300 * time.Millisecond)
	out, err := ctlErr("-n", node, "stop_app")
	require.NoError(t, err, "stop_app: %s", out)
	time.Sleep(8 * time.Second)

	closeStart := time.Now()
	require.NoError(t, waiting.Close(ctx))
	t.Logf("Close while waiting to reconnect took %v", time.Since(closeStart))
	require.ErrorIs(t, waiting.Err(), leveret.ErrClosed)

	out, err = ctlErr("-n", node, "start_app")
	require.NoError(t, err, "start_app: %s", out)
	log.waitRecovered(t, 1)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	total := <-published
	wg.Wait()

	seen := make(map[int]bool)
	for len(seen) < total {
		select {
		case d, ok := <-cs.Deliveries():
			require.True(t, ok, "deliveries closed: %v", cs.Err())
			id, _ := strconv.Atoi(string(d.Body))
			seen[id] = true
			if _, err := d.Ack().Wait(ctx); err != nil {
				require.ErrorIs(t, err, leveret.ErrStaleDelivery)
			}
		case <-ctx.Done():
			t.Fatalf("saw %d of %d messages", len(seen), total)
		}
	}
	for _, e := range log.of(leveret.EventReconnecting) {
		require.NotContains(t, e.Endpoint, "guest:guest", "an event shows the password")
	}
	t.Logf("%d messages through an 8 s outage; %d reconnect attempts", total, len(log.of(leveret.EventReconnecting)))
}

// A slow consumer (30 ms per message, manual acks, prefetch 10) across 3
// forced closes: its stale acks are refused locally, so no channel is
// closed by an ack of the wrong tag, the consumer never ends, and the
// redeliveries are no more than the deliveries it held at each close.
func TestRecoverySlowConsumerStaleAcks(t *testing.T) {
	ctx, name, queue, log, c := recoverySetup(t, 3*opTimeout)
	var err error
	const total, prefetch, closes = 200, 10, 3
	var ps []*leveret.Promise[struct{}]
	for i := range total {
		ps = append(ps, c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
	}
	_, err = leveret.Collect(ctx, ps)
	require.NoError(t, err)
	cs, err := c.Consume(ops.Consume{Queue: queue, Prefetch: prefetch}).Wait(ctx)
	require.NoError(t, err)

	seen := make(map[int]bool)
	redelivered, stale, closed := 0, 0, 0
	next := 40
	for len(seen) < total {
		select {
		case d, ok := <-cs.Deliveries():
			require.True(t, ok, "the consumer ended: %v", cs.Err())
			time.Sleep(30 * time.Millisecond)
			id, _ := strconv.Atoi(string(d.Body))
			if d.Redelivered {
				redelivered++
			}
			switch _, err := d.Ack().Wait(ctx); {
			case errors.Is(err, leveret.ErrStaleDelivery):
				stale++
			default:
				require.NoError(t, err)
				seen[id] = true
			}
			if len(seen) == next && closed < closes {
				closed++
				next += 40
				forceClose(t, name)
				log.waitRecovered(t, closed)
			}
		case <-ctx.Done():
			t.Fatalf("acked %d of %d", len(seen), total)
		}
	}
	require.NoError(t, cs.Err())
	require.Equal(t, closes, closed)
	require.LessOrEqual(t, redelivered, closes*prefetch, "more redeliveries than deliveries held")
	t.Logf("%d forced closes: %d redeliveries, %d stale acks refused locally", closes, redelivered, stale)
}

// A confirm.Publisher with WithRepublish across 20 forced closes during a
// stream of at least 100,000 messages: the loop has no recovery code,
// every promise ends Acked, every message is in the queue at least once,
// and the duplicates stay under one window per close. The publisher's
// numbering never drifts (a drift would leave promises unsettled).
func TestRecoveryConfirmRepublish(t *testing.T) {
	ctx, name, queue, log, c := recoverySetup(t, 4*opTimeout)
	var err error
	const window, closes, atLeast = 1000, 20, 100_000
	p, err := confirm.New(ctx, c, confirm.WithWindow(window), confirm.WithRepublish())
	require.NoError(t, err)
	defer p.Close(context.Background())

	closed, wait := forceCloses(t, name, log, closes, 200*time.Millisecond)
	var ps []*leveret.Promise[confirm.Outcome]
	publishUntil(closed, atLeast, func(i int) {
		ps = append(ps, p.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
		if i%10 == 9 {
			time.Sleep(time.Millisecond) // spread the stream over the closes
		}
	})
	wait()
	requireAllAcked(t, ctx, ps)
	total := len(ps)
	cs, err := c.Consume(ops.Consume{Queue: queue, NoAck: true}).Wait(ctx)
	require.NoError(t, err)
	seen := countDeliveries(t, ctx, cs, total, func(b []byte) int {
		id, err := strconv.Atoi(string(b))
		require.NoError(t, err, "a body that was never published")
		return id
	})
	dups := duplicates(seen)
	t.Logf("%d closes, %d messages confirmed, all in the queue; %d duplicates (bound %d)", closes, total, dups, closes*window)
	require.LessOrEqual(t, dups, closes*window)
}

// A transaction open when the connection drops: its Commit fails with
// ErrTransactionLost and commits nothing; the channel is back in
// transaction mode, and the next transaction commits.
func TestRecoveryTransactionAcrossReconnect(t *testing.T) {
	ctx, name, queue, log, c := recoverySetup(t, opTimeout)
	var err error
	t1, err := tx.New(ctx, c)
	require.NoError(t, err)
	_, err = t1.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("lost")}}).Wait(ctx)
	require.NoError(t, err)

	forceClose(t, name)
	log.waitRecovered(t, 1)
	// Published after the reopen, inside the transaction the drop broke.
	_, err = t1.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("half")}}).Wait(ctx)
	require.NoError(t, err)
	_, err = t1.Commit().Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrTransactionLost)
	require.ErrorIs(t, err, leveret.ErrConnectionForced)

	_, err = t1.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("next")}}).Wait(ctx)
	require.NoError(t, err)
	_, err = t1.Commit().Wait(ctx)
	require.NoError(t, err)
	var bodies []string
	for {
		r, err := c.Get(ops.Get{Queue: queue, NoAck: true}).Wait(ctx)
		require.NoError(t, err)
		if r.Empty() {
			break
		}
		bodies = append(bodies, string(r.Delivery.Body))
	}
	require.Equal(t, []string{"next"}, bodies, "only the transaction after the drop committed")
}

// An explicit channel is re-opened on the new connection with its
// consumer (same tag, same Deliveries) and its prefetch; a delivery from
// before the drop is stale.
func TestRecoveryExplicitChannelConsumer(t *testing.T) {
	ctx := testContext(t)
	name := uniqueName(t, "conn")
	queue := uniqueName(t, "q")
	deleteAtEnd(t, []string{queue}, nil)
	log := newEventLog()
	c := dial(t, leveret.WithConnectionName(name), leveret.WithEventHandler(log.handle))
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}).Wait(ctx)
	require.NoError(t, err)
	_, err = ch.Qos(ops.Qos{PrefetchCount: 3}).Wait(ctx)
	require.NoError(t, err)
	cs, err := ch.Consume(ops.Consume{Queue: queue}).Wait(ctx)
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, ch.Send(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
	}
	held := <-cs.Deliveries()

	forceClose(t, name)
	rec := log.waitRecovered(t, 1)
	require.Equal(t, 1, rec.Recovery.Channels)
	require.NoError(t, ch.Err(), "the channel is open again")
	_, err = held.Ack().Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrStaleDelivery)

	// Three were held unacked (prefetch 3) when it dropped: redelivered,
	// with the other two, on the same Deliveries channel.
	seen := make(map[string]bool)
	for len(seen) < 5 {
		select {
		case d, ok := <-cs.Deliveries():
			require.True(t, ok, "consumer ended: %v", cs.Err())
			if _, err := d.Ack().Wait(ctx); err == nil {
				seen[string(d.Body)] = true
			} else {
				require.ErrorIs(t, err, leveret.ErrStaleDelivery)
			}
		case <-ctx.Done():
			t.Fatalf("got %d of 5", len(seen))
		}
	}
	require.Equal(t, cs.Tag(), held.ConsumerTag)
	require.NoError(t, cs.Err())
}

// Recovery of one entity failing (a queue someone redeclared meanwhile
// with other arguments: 406) is reported and does not stop the rest.
func TestRecoveryOneEntityFails(t *testing.T) {
	ctx := testContext(t)
	name := uniqueName(t, "conn")
	clash, fine := uniqueName(t, "clash"), uniqueName(t, "fine")
	deleteAtEnd(t, []string{clash, fine}, nil)
	log := newEventLog()
	c := dial(t, leveret.WithConnectionName(name), leveret.WithEventHandler(log.handle))
	for _, q := range []string{clash, fine} {
		_, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(ctx)
		require.NoError(t, err)
	}
	other := dial(t, leveret.WithReconnect(nil))
	_, err := other.QueueDelete(ops.QueueDelete{Queue: clash}).Wait(ctx)
	require.NoError(t, err)
	_, err = other.QueueDeclare(ops.QueueDeclare{Queue: clash, Durable: true, Args: ops.Table{"x-max-length": int32(5)}}).Wait(ctx)
	require.NoError(t, err)

	forceClose(t, name)
	rec := log.waitRecovered(t, 1).Recovery
	require.Len(t, rec.Failed, 1, "failures: %v", rec.Failed)
	require.ErrorIs(t, rec.Failed[0], leveret.ErrPreconditionFailed)
	require.Contains(t, rec.Failed[0].Error(), clash)
	require.Equal(t, 1, rec.Queues, "the other queue was re-declared")
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: fine, Passive: true}).Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, leveret.StateConnected, c.State())
}

// Without WithRepublish a confirm.Publisher carries on across a forced
// close: what the drop left unconfirmed fails with ErrNotConfirmed wrapping
// the connection's error, everything else is acked (none hangs: numbering
// does not drift), and publishing goes on on the re-opened channel.
func TestRecoveryConfirmWithoutRepublish(t *testing.T) {
	ctx, name, queue, log, c := recoverySetup(t, 2*opTimeout)
	p, err := confirm.New(ctx, c, confirm.WithWindow(500))
	require.NoError(t, err)
	defer p.Close(context.Background())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ps []*leveret.Promise[confirm.Outcome]
	wg.Go(func() { // owner: this test; exits when stop is closed
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ps = append(ps, p.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
		}
	})
	time.Sleep(300 * time.Millisecond)
	forceClose(t, name)
	log.waitRecovered(t, 1)
	time.Sleep(300 * time.Millisecond) // publishing goes on after the reopen
	close(stop)
	wg.Wait()
	acked, lost, lastLost := 0, 0, -1
	for i, pr := range ps {
		out, err := pr.Wait(ctx)
		if err != nil {
			require.ErrorIs(t, err, confirm.ErrNotConfirmed, "publish %d", i)
			require.ErrorIs(t, err, leveret.ErrConnectionForced, "publish %d", i)
			lost++
			lastLost = i
			continue
		}
		require.True(t, out.Acked(), "publish %d: %v", i, out.Status)
		acked++
	}
	t.Logf("%d publishes: %d acked, %d not confirmed at the drop", len(ps), acked, lost)
	require.Less(t, lastLost, len(ps)-1, "publishing went on after the reopen")
	require.NoError(t, p.Err())
}
