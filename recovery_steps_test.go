package leveret_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// The step-kill harness (issue 23, §2): a client with topology, pooled
// channels, Client.Consume consumers and explicit channels in every mode
// loses its connection; the connection that recovers it is then killed at
// one step of the recovery (the dial, each write of the handshake, each
// method recovery sends), on one, two or three recoveries in a row, and
// the next recovers. After each run: every consumer delivers, no channel
// or consumer ended, the events and State tell what happened, each killed
// recovery backed off, Close returns within a second, and no goroutine is
// left. A watchdog fails the run with every goroutine's stack when
// anything waits longer than it should (a lock taken twice, a missed
// wake-up). Event, reopen and close handlers call back into the client, so
// a handler run under one of its locks would deadlock here.
func TestRecoveryStepKill(t *testing.T) {
	steps := calibrateRecoverySteps(t)
	for times := 1; times <= 3; times++ {
		t.Run(fmt.Sprintf("dial/times=%d", times), func(t *testing.T) {
			runStepKill(t, stepKill{times: times, dial: true})
		})
		for w := 1; w <= handshakeWrites; w++ {
			t.Run(fmt.Sprintf("handshake-write-%d/times=%d", w, times), func(t *testing.T) {
				runStepKill(t, stepKill{times: times, handshakeWrite: w})
			})
		}
		for k := 1; k <= steps; k++ {
			t.Run(fmt.Sprintf("method-%d/times=%d", k, times), func(t *testing.T) {
				runStepKill(t, stepKill{times: times, method: k})
			})
		}
	}
}

// handshakeWrites is how many writes the client's side of the handshake
// makes: the protocol header, start-ok, tune-ok and open.
const handshakeWrites = 4

// stepKill says where to kill, and how many times in a row: the first
// times connection attempts after the drop (dial) or connections made
// after it (handshake, method) die at that step.
type stepKill struct {
	times          int
	dial           bool // the dial fails
	handshakeWrite int  // the connection dies at this write of the handshake
	method         int  // the connection dies when the server reads this method
}

// calibrateRecoverySteps runs the scenario with nothing killed and returns
// how many methods its recovery sends: the fewest of a few runs, as the
// pooled channels' share varies with timing by a method or two.
func calibrateRecoverySteps(t *testing.T) int {
	steps := 0
	for i := range 5 {
		var r stepRun
		r.start(t, stepKill{})
		r.recover(t)
		n := r.recoverySteps()
		r.finish(t)
		if i == 0 || n < steps {
			steps = n
			t.Logf("a recovery sends %d methods: %v", n, r.sent(2)[:n])
		}
	}
	require.Greater(t, steps, 20, "the scenario recovers too little to test")
	return steps
}

func runStepKill(t *testing.T, k stepKill) {
	var r stepRun
	r.start(t, k)
	r.recover(t)
	r.finish(t)
}

// stepRun is one run of the scenario.
type stepRun struct {
	kill     stepKill
	broker   fakeserver.Broker
	server   *fakeserver.Server
	client   *leveret.Client
	explicit *leveret.Channel // qos, confirm mode, two consumers
	tx       *leveret.Channel // transactional, nothing published
	all      []*leveret.Consumer
	watchdog context.Context
	stop     context.CancelFunc

	mu         sync.Mutex
	events     []leveret.Event
	methods    map[int][]string // by server connection: each method's id, in order
	atRecovery int              // methods the recovering connection carried when EventRecovered came
	recovered  chan struct{}
	lost       chan struct{} // the first disconnect
	parked     chan struct{} // closed once operations were issued during the outage
	issued     []leveret.Waiter
	publishing chan *leveret.Promise[struct{}] // the publish issued during the outage
	done       atomic.Bool                     // recovered: kill nothing more
	killed     atomic.Int32
	dials      atomic.Int32
	reentry    atomic.Pointer[stepRun] // this run once set up: what the event handler calls into
}

// kills reports whether the n-th dial, or the n-th connection the server
// accepted, is one to kill: the first is Dial's, the next times after it.
func (k stepKill) kills(n int) bool { return n >= 2 && n <= 1+k.times }

func (r *stepRun) start(t *testing.T, k stepKill) {
	t.Helper()
	leakCheck(t)
	r.kill = k
	r.methods = make(map[int][]string)
	r.recovered = make(chan struct{}, 8)
	r.lost = make(chan struct{}, 1)
	r.parked = make(chan struct{})
	r.watchdog, r.stop = context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(r.stop)
	r.broker.Before = r.before
	r.server = fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, r.broker.Serve)
	c, err := leveret.Dial(r.watchdog, r.server.URL(),
		leveret.WithDialer(r.dialer),
		leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond}),
		leveret.WithEventHandler(r.onEvent),
		leveret.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	require.NoError(t, err)
	r.client = c
	t.Cleanup(func() { // a failed run's client must not outlive it
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c.Close(ctx)
	})
	r.setUp(t)
}

// setUp builds what recovery restores: two exchanges, a named and a
// server-named queue, their bindings, a confirmed client-level publish and
// a Get (pooled channels), two Client.Consume consumers, and two explicit
// channels: one with qos, confirm mode and two consumers, one in tx mode.
func (r *stepRun) setUp(t *testing.T) {
	t.Helper()
	c := r.client
	ctx := r.watchdog
	named := c.QueueDeclare(ops.QueueDeclare{Queue: "work", Durable: true})
	anon := c.QueueDeclare(ops.QueueDeclare{Exclusive: true})
	r.check(t, leveret.WaitAll(ctx,
		c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "in", Kind: ops.Topic}),
		c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "fan", Kind: ops.Fanout}),
		named, anon), "declaring")
	anonOk, _ := anon.Value()
	r.check(t, leveret.WaitAll(ctx,
		c.QueueBind(ops.QueueBind{Queue: "work", Exchange: "in", RoutingKey: "w.#"}),
		c.QueueBind(ops.QueueBind{Queue: anonOk.Queue, Exchange: "fan"}),
		c.ExchangeBind(ops.ExchangeBind{Destination: "fan", Source: "in", RoutingKey: "all"}),
		c.Publish(ctx, ops.Publish{Exchange: "in", RoutingKey: "w.1", Message: ops.Message{Body: []byte("x")}}),
		c.Get(ops.Get{Queue: "work"}),
	), "binding, publishing, getting")
	owned, err := leveret.Collect(ctx, []*leveret.Promise[*leveret.Consumer]{
		c.Consume(ops.Consume{Queue: "work", ConsumerTag: "own-work"}),
		c.Consume(ops.Consume{Queue: anonOk.Queue, ConsumerTag: "own-anon"}),
	})
	r.check(t, err, "Client.Consume")
	r.all = append(r.all, owned...)

	r.explicit, err = c.Channel(ctx)
	r.check(t, err, "opening a channel")
	r.explicit.OnReopen(func(error, uint64) { _ = r.explicit.Err(); _ = c.State() })
	r.explicit.OnClose(func(error) { _ = c.State() })
	r.check(t, leveret.WaitAll(ctx, r.explicit.Qos(ops.Qos{PrefetchCount: 10}), r.explicit.ConfirmSelect()), "qos, confirm")
	mine, err := leveret.Collect(ctx, []*leveret.Promise[*leveret.Consumer]{
		r.explicit.Consume(ops.Consume{Queue: "work", ConsumerTag: "ch-work"}),
		r.explicit.Consume(ops.Consume{Queue: anonOk.Queue, ConsumerTag: "ch-anon"}),
	})
	r.check(t, err, "Channel.Consume")
	r.all = append(r.all, mine...)

	r.tx, err = c.Channel(ctx)
	r.check(t, err, "opening a tx channel")
	_, err = r.tx.TxSelect().Wait(ctx)
	r.check(t, err, "tx.select")
	r.reentry.Store(r)
}

// dialer fails the dials, or the handshake writes, of the recoveries the
// run kills.
func (r *stepRun) dialer(ctx context.Context, network, addr string) (net.Conn, error) {
	n := int(r.dials.Add(1))
	if n == 2 { // the first redial waits until operations are parked
		select {
		case <-r.parked:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.kill.dial && !r.done.Load() && r.kill.kills(n) {
		r.killed.Add(1)
		return nil, errors.New("injected: the dial failed")
	}
	nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || r.kill.handshakeWrite == 0 || r.done.Load() || !r.kill.kills(n) {
		return nc, err
	}
	r.killed.Add(1)
	f := &failingWrites{Conn: nc}
	f.after.Store(int32(r.kill.handshakeWrite - 1))
	return f, nil
}

// before is the broker's hook: it closes the first connection with 320
// when told to (recover), and kills the connection of each recovery the
// run kills at its k-th method.
func (r *stepRun) before(n, step int, _ uint16, m proto.Method) bool {
	r.mu.Lock()
	r.methods[n] = append(r.methods[n], m.ID().String())
	r.mu.Unlock()
	if r.kill.method == 0 || r.done.Load() || step != r.kill.method || !r.kill.kills(n) {
		return false
	}
	r.killed.Add(1)
	return true
}

func (r *stepRun) onEvent(e leveret.Event) {
	// Call back into the client: a handler run under one of its locks
	// would deadlock the run, and the watchdog would say where.
	if c := r.reentry.Load(); c != nil {
		_ = c.client.State()
		_ = c.explicit.Err()
		for _, cs := range c.all {
			_ = cs.Err()
		}
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	if e.Kind == leveret.EventDisconnected {
		select {
		case r.lost <- struct{}{}:
		default:
		}
	}
	if e.Kind == leveret.EventRecovered {
		r.mu.Lock()
		r.atRecovery = len(r.methods[len(r.server.Conns())])
		r.mu.Unlock()
		r.done.Store(true)
		r.recovered <- struct{}{}
	}
}

// recover drops the first connection with 320 CONNECTION_FORCED, as
// rabbitmqctl close_connection does, issues client-level operations while
// the client is disconnected (they park, and go out on pooled channels
// during the recovery), and waits for the recovery.
func (r *stepRun) recover(t *testing.T) {
	t.Helper()
	first := r.server.Conns()[0]
	require.NoError(t, first.Send(0, &proto.ConnectionClose{ReplyCode: uint16(proto.ConnectionForced), ReplyText: "CONNECTION_FORCED - step-kill"}))
	select {
	case <-r.lost:
	case <-r.watchdog.Done():
		r.fail(t, "no EventDisconnected")
	}
	c := r.client
	r.issued = []leveret.Waiter{
		c.QueueDeclare(ops.QueueDeclare{Queue: "parked", Durable: true}),
		c.QueueBind(ops.QueueBind{Queue: "parked", Exchange: "in", RoutingKey: "p"}),
		c.Get(ops.Get{Queue: "parked"}),
	}
	// Client.Publish waits for a connection (bounded by its ctx) unless it
	// queues behind an operation: it may block until the recovery.
	r.publishing = make(chan *leveret.Promise[struct{}], 1)
	go func() { // owner: this test; exits when Publish returns, by the watchdog's end at the latest
		r.publishing <- c.Publish(r.watchdog, ops.Publish{Exchange: "in", RoutingKey: "p", Message: ops.Message{Body: []byte("parked")}})
	}()
	close(r.parked)
	select {
	case <-r.recovered:
	case <-r.watchdog.Done():
		r.fail(t, "no EventRecovered")
	}
}

// sent returns the methods the server read on its n-th connection.
func (r *stepRun) sent(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.methods[n]...)
}

// recoverySteps is how many methods the first recovery's connection
// carried before the recovery was reported.
func (r *stepRun) recoverySteps() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.atRecovery
}

// finish checks the client after its recovery, and closes it.
func (r *stepRun) finish(t *testing.T) {
	t.Helper()
	c, ctx := r.client, r.watchdog
	require.Equal(t, leveret.StateConnected, c.State())
	r.checkEvents(t)
	require.NoError(t, r.explicit.Err(), "the explicit channel ended")
	require.NoError(t, r.tx.Err(), "the tx channel ended")
	for _, cs := range r.all {
		require.NoError(t, cs.Err(), "consumer %s ended", cs.Tag())
	}

	// Every consumer delivers on the last connection.
	conns := r.server.Conns()
	last := conns[len(conns)-1]
	sent, err := r.broker.DeliverToAll(last, "after")
	require.NoError(t, err)
	require.Equal(t, len(r.all), sent, "consumers on the broker: %v", r.broker.Consumers(last))
	for _, cs := range r.all {
		select {
		case d := <-cs.Deliveries():
			require.Equal(t, "after", string(d.Body))
			_, err := d.Ack().Wait(ctx)
			r.check(t, err, "ack of "+cs.Tag())
		case <-ctx.Done():
			r.fail(t, "consumer "+cs.Tag()+" delivered nothing")
		}
	}
	// What was parked went out, once or again after a kill.
	select {
	case p := <-r.publishing:
		r.issued = append(r.issued, p)
	case <-ctx.Done():
		r.fail(t, "Client.Publish issued during the outage did not return")
	}
	r.check(t, leveret.WaitAll(ctx, r.issued...), "operations issued during the outage")
	// Every kind of channel works.
	r.check(t, leveret.WaitAll(ctx,
		c.QueueDeclare(ops.QueueDeclare{Queue: "after", Durable: true}),
		c.Publish(ctx, ops.Publish{Exchange: "in", RoutingKey: "w.2", Message: ops.Message{Body: []byte("y")}}),
		r.explicit.Publish(ctx, ops.Publish{Exchange: "in", RoutingKey: "w.3", Message: ops.Message{Body: []byte("z")}}),
		r.tx.TxCommit(),
	), "operations after the recovery")

	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }() // owner: this test; Close returns, or the watchdog fails the test
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-ctx.Done():
		r.fail(t, "Client.Close did not return")
	}
	require.Less(t, time.Since(start), time.Second, "Client.Close took longer than a second")
}

// checkEvents: one EventRecovered, after the last connection was made;
// one disconnect per connection lost; every recovery killed backed off
// before its next dial.
func (r *stepRun) checkEvents(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	events := append([]leveret.Event(nil), r.events...)
	defer r.mu.Unlock()
	// Later recoveries may send less than the first (what was parked went
	// out already): a step beyond theirs kills fewer than asked.
	kills := int(r.killed.Load())
	if r.kill.times > 0 && kills == 0 {
		// Only a recovery that sent fewer methods than that step (a pooled
		// channel shared, say) kills none.
		require.Positive(t, r.kill.method, "nothing killed")
		require.Less(t, r.atRecovery, r.kill.method, "nothing killed; the recovery sent %v", r.methods[2])
	}
	require.LessOrEqual(t, kills, r.kill.times, "connections killed")
	var recovered, disconnected int
	var lastConnected, lastRecovered = -1, -1
	for i, e := range events {
		switch e.Kind {
		case leveret.EventRecovered:
			recovered++
			lastRecovered = i
		case leveret.EventDisconnected:
			disconnected++
		case leveret.EventConnected:
			lastConnected = i
		}
	}
	require.Equal(t, 1, recovered, "EventRecovered once: %v", events)
	require.Greater(t, lastRecovered, lastConnected, "EventRecovered after the last connection: %v", events)
	if !r.kill.dial && r.kill.handshakeWrite == 0 {
		require.Equal(t, 1+kills, disconnected, "a disconnect per connection lost: %v", events)
	}
	// The first dial of the first recovery is at once (320 after a
	// recovered connection); each one after a killed recovery waits.
	var delays []time.Duration
	for _, e := range events {
		if e.Kind == leveret.EventReconnecting {
			delays = append(delays, e.Delay)
		}
	}
	require.Len(t, delays, 1+kills, "a reconnect round per connection attempt: %v", events)
	require.Zero(t, delays[0], "the first round after a forced close is at once")
	for i, d := range delays[1:] {
		require.Positive(t, d, "round %d after a killed recovery did not back off", i+2)
	}
}

// check fails the run with every goroutine's stack if err is the
// watchdog's, or plainly otherwise.
func (r *stepRun) check(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil && r.watchdog.Err() != nil {
		r.fail(t, what+": "+err.Error())
	}
	require.NoError(t, err, what)
}

// fail is the watchdog: it dumps every goroutine and ends the test.
func (r *stepRun) fail(t *testing.T, what string) {
	t.Helper()
	buf := make([]byte, 8<<20)
	t.Fatalf("watchdog: %s (kill %+v)\n%s", what, r.kill, buf[:runtime.Stack(buf, true)])
}
