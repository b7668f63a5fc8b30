package leveret

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/leveret-mq/leveret/internal/pool"
	"github.com/leveret-mq/leveret/internal/topology"
	"github.com/leveret-mq/leveret/ops"
)

// Client is a connection to the broker that survives drops: a supervisor
// goroutine reconnects under the reconnect policy (WithReconnect, on by
// default; WithFailover for several brokers) and re-declares on the new
// connection the exchanges, queues, bindings and Client.Consume consumers
// the broker confirmed. Its methods are safe for concurrent use.
//
// On a drop, client-level operations in flight or issued during the
// outage are re-sent on the next connection, so their promises settle
// then; Client.Publish re-sends its unconfirmed messages (at-least-once)
// and a new Publish waits, under its ctx, for the next connection. An
// explicit Channel is re-opened with its prefetch, confirm and transaction
// modes and consumers; what was pending on it at the drop fails with the
// connection's error (see Channel.OnReopen, ErrTransactionLost).
//
// Operations called on the Client are the safe level. Topology operations
// and Publish run on a small pool of the client's own channels, in confirm
// mode: they pipeline, and when one fails only that one fails (operations
// and publishes the broker discarded behind it are re-sent on a fresh
// channel). Get and Consume run on channels that no unrelated operation can
// close, so their deliveries can always be acknowledged. Use Channel for an
// explicit channel whose operations share its fate.
type Client struct {
	cfg      config
	eps      []endpoint
	policy   ReconnectPolicy            // nil: a dropped connection ends the client
	gen      atomic.Pointer[generation] // the latest connection; it may have ended
	reg      *registry                  // what is restored besides the topology, and the gate
	pool     *pool.Pool                 // client-level operations and Client.Publish
	rec      *topology.Record           // topology to re-declare on a new connection
	dispatch *dispatcher
	hooks    *hookSet // nil without WithHooks
	blocked  atomic.Bool
	state    atomic.Int32 // a State

	consumerSeq atomic.Uint64      // numbers generated consumer tags
	settledOK   *Promise[struct{}] // returned by every ack that was queued
	// Overflow pumps (see Consumer.pump): started by the reader, stopped
	// and joined by Close.
	pumps     sync.WaitGroup
	stopPumps chan struct{}
	// closing is closed when Close begins: a reader held by a consumer's
	// memory limit lets go, so the connection can close.
	closing chan struct{}

	// The supervisor goroutine (session.Supervisor.Run); supCtx ends when Close begins,
	// cutting short a reconnect delay, dial or recovery step.
	sup       sync.WaitGroup
	supCtx    context.Context
	supCancel context.CancelFunc

	done       chan struct{} // closed when the client has ended for good
	endErr     error         // why; written before done is closed
	finishOnce sync.Once
	closeOnce  sync.Once
	closeErr   error
	// refusedReplays are recorded declarations the broker closed the
	// connection over during a replay (internal/topology), for the next
	// EventRecovered; recovering is the report of the recovery under way.
	// Supervisor only.
	refusedReplays []error
	recovering     *Recovery
}

func newClient(eps []endpoint, policy ReconnectPolicy, d dialed) *Client {
	cfg := eps[d.ep].cfg
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, eps: eps, policy: policy, dispatch: newDispatcher(cfg.logger), stopPumps: make(chan struct{}),
		closing: make(chan struct{}), done: make(chan struct{}), settledOK: settled(struct{}{}, nil)}
	c.hooks, _ = newHookSet(cfg.hooks) // validated by Dial
	c.rec = topology.NewRecord(cfg.topologyFilter, cfg.topologyOff)
	c.supCtx, c.supCancel = context.WithCancel(context.Background())
	g := c.newGeneration(d, 1)
	c.gen.Store(g)
	c.reg = newRegistry(c, g)
	c.pool = c.newPool()
	c.emit(Event{Kind: EventConnected, Endpoint: g.Endpoint})
	sup := c.newSupervisor(g)
	c.sup.Add(1)
	go func() { // owner: Client; exits when the client ends (Close, or the policy gives up); joined by Close.
		defer c.sup.Done()
		sup.Run()
	}()
	if ts := cfg.tokens; ts != nil && cfg.credentials != nil {
		c.sup.Add(1)
		go func() { // owner: Client; exits when the client ends (supCtx or done); joined by Close.
			defer c.sup.Done()
			c.refreshTokens(ts)
		}()
	}
	return c
}

// onBlocked runs on the reader: it records the state and hands the
// user's handler to the dispatcher.
func (c *Client) onBlocked(blocked bool, reason string) {
	c.blocked.Store(blocked)
	if fn := c.cfg.onBlocked; fn != nil {
		c.dispatch.post(func() { fn(blocked, reason) })
	}
}

// Blocked reports whether the broker has blocked publishing on this
// connection (connection.blocked, e.g. under a memory alarm). Publishes wait
// while it is true; other operations carry on.
func (c *Client) Blocked() bool { return c.blocked.Load() }

// ServerProperties returns the broker's properties from the latest
// connection's handshake (product, version, capabilities); after a
// reconnect, the new broker's. The caller must not modify the table.
func (c *Client) ServerProperties() ops.Table { return c.gen.Load().Tuning.Server }

// FrameMax is the latest connection's negotiated maximum frame size in bytes.
func (c *Client) FrameMax() uint32 { return c.gen.Load().Tuning.FrameMax }

// Done is closed when the client has ended for good: after Close, or when
// a dropped connection is not recovered (reconnecting is off, the policy
// gave up, or the failure is not worth retrying). A connection that drops
// and is recovered does not close it; see State and WithEventHandler.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil until the client has ended, then why: an error wrapping
// ErrClosed after Close, else the error that ended it (a *ConnectionError,
// or the last reconnect attempt's error).
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.endErr
	default:
		return nil
	}
}

// Close closes the client gracefully: everything already issued is sent
// first, then connection.close; it waits for the broker's close-ok until
// ctx ends, then closes the socket. Called while reconnecting, it stops at
// once (a delay, dial or recovery in progress is cut short). Operations
// still pending or waiting for a connection fail with an error wrapping
// ErrClosed; unconfirmed Client.Publish calls fail with ErrNotConfirmed.
// Deliveries still waiting in a consumer's overflow queue are not handed
// over (the broker requeues those that needed an ack). Close joins every
// goroutine the client started and is idempotent; it returns ctx's error if
// the broker did not answer in time.
func (c *Client) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.supCancel()
		closed := fmt.Errorf("amqp: client closed by this client (Close): %w", ErrClosed)
		c.reg.end(closed) // no connection is installed after this
		g := c.gen.Load()
		c.closeErr = g.Conn.Close(ctx)
		c.sup.Wait()
		c.reg.retrying.Wait() // registry.end stopped the timers; a callback under way finds the client ended
		if err := g.Conn.Err(); err != nil && errors.Is(err, ErrClosed) {
			closed = err
		}
		c.finish(closed)
		c.dispatch.close()
		close(c.stopPumps)
		c.pumps.Wait()
	})
	return c.closeErr
}

// startPump starts cs's overflow pump. It runs on the reader goroutine.
func (c *Client) startPump(cs *Consumer) {
	c.pumps.Add(1)
	go func() { // owner: Client; exits when cs's overflow is handed over or Close stops it.
		defer c.pumps.Done()
		cs.pump(c.stopPumps)
	}()
}

// Channel opens an explicit channel and waits, until ctx ends, for the
// broker to confirm it. Operations on it run in issue order; if the broker
// closes it, operations issued behind the failing one fail with
// ErrNotExecuted wrapping the cause, and Err reports the cause. While the
// client reconnects, Channel waits for the next connection, and an open
// that the connection's drop interrupted is tried again there; a refusal
// by the broker (a *ChannelError or *ConnectionError it sent) is returned.
func (c *Client) Channel(ctx context.Context) (*Channel, error) {
	for {
		g, err := c.reg.waitLive(ctx)
		if err != nil {
			return nil, err
		}
		ch, err := c.channelOn(ctx, g)
		switch {
		case err == nil || ctx.Err() != nil:
			return ch, err
		case !c.droppedWith(ctx, g, err):
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		// g dropped during the open: the next connection gets it.
	}
}

// channelOn opens an explicit channel on g and waits for channel.open-ok.
func (c *Client) channelOn(ctx context.Context, g *generation) (*Channel, error) {
	opened := newPromise[struct{}]()
	ch := newChannel(c)
	ch.recovers = c.policy != nil
	if ch.recovers {
		// Registered before the open: a drop right after open-ok suspends
		// it, and the next connection must re-open it.
		c.reg.addChannel(ch)
	}
	if err := c.open(ch, g, func(err error) { opened.resolve(struct{}{}, err) }); err != nil {
		ch.end(err)
		return nil, err
	}
	if _, err := opened.Wait(ctx); err != nil {
		ch.mux().Close(func(error) {}) // nobody will use it: do not leak the number
		ch.end(err)                    // nor re-open it
		return nil, err
	}
	return ch, nil
}

// ExchangeDeclare declares an exchange on the client's channel pool. It does
// not block; the promise settles with the broker's reply.
func (c *Client) ExchangeDeclare(o ops.ExchangeDeclare) *Promise[ops.ExchangeDeclareOk] {
	return issue(pooled{c.pool}, exchangeKeys(o.Exchange, ""), exchangeDeclare(o), exchangeDeclareOk)
}

// ExchangeDelete deletes an exchange on the client's channel pool. It does not block.
func (c *Client) ExchangeDelete(o ops.ExchangeDelete) *Promise[ops.ExchangeDeleteOk] {
	return issue(pooled{c.pool}, exchangeKeys(o.Exchange, ""), exchangeDelete(o), exchangeDeleteOk)
}

// ExchangeBind binds two exchanges on the client's channel pool. It does not block.
func (c *Client) ExchangeBind(o ops.ExchangeBind) *Promise[ops.ExchangeBindOk] {
	return issue(pooled{c.pool}, exchangeKeys(o.Destination, o.Source), exchangeBind(o), exchangeBindOk)
}

// ExchangeUnbind unbinds two exchanges on the client's channel pool. It does not block.
func (c *Client) ExchangeUnbind(o ops.ExchangeUnbind) *Promise[ops.ExchangeUnbindOk] {
	return issue(pooled{c.pool}, exchangeKeys(o.Destination, o.Source), exchangeUnbind(o), exchangeUnbindOk)
}

// QueueDeclare declares a queue on the client's channel pool. It does not block.
func (c *Client) QueueDeclare(o ops.QueueDeclare) *Promise[ops.QueueDeclareOk] {
	return issue(pooled{c.pool}, queueKeys(o.Queue, ""), queueDeclare(o), queueDeclareOk)
}

// QueueBind binds a queue to an exchange on the client's channel pool. It
// does not block. It is sent after any pending client-level declare of the
// same queue or exchange.
func (c *Client) QueueBind(o ops.QueueBind) *Promise[ops.QueueBindOk] {
	return issue(pooled{c.pool}, queueKeys(o.Queue, o.Exchange), queueBind(o), queueBindOk)
}

// QueueUnbind removes a binding on the client's channel pool. It does not block.
func (c *Client) QueueUnbind(o ops.QueueUnbind) *Promise[ops.QueueUnbindOk] {
	return issue(pooled{c.pool}, queueKeys(o.Queue, o.Exchange), queueUnbind(o), queueUnbindOk)
}

// QueuePurge purges a queue on the client's channel pool. It does not block.
func (c *Client) QueuePurge(o ops.QueuePurge) *Promise[ops.QueuePurgeOk] {
	return issue(pooled{c.pool}, queueKeys(o.Queue, ""), queuePurge(o), queuePurgeOk)
}

// QueueDelete deletes a queue on the client's channel pool. It does not block.
func (c *Client) QueueDelete(o ops.QueueDelete) *Promise[ops.QueueDeleteOk] {
	return issue(pooled{c.pool}, queueKeys(o.Queue, ""), queueDelete(o), queueDeleteOk)
}

// UpdateSecret gives the broker a new secret for this connection's user
// (connection.update-secret, RabbitMQ 3.8+), as used with expiring OAuth 2
// tokens, and blocks until the broker accepts it or ctx ends. The broker
// re-checks the user with the new secret; if it refuses it, it closes the
// connection (the error then is the *ConnectionError). reason is shown in
// the broker's log. The secret never appears in errors or logs. With
// RabbitMQ's internal user database, see DESIGN.md for what it does.
func (c *Client) UpdateSecret(ctx context.Context, secret, reason string) error {
	g, err := c.reg.waitLive(ctx)
	if err != nil {
		return err
	}
	p := newPromise[struct{}]()
	if err := g.Conn.UpdateSecret(secret, reason, func(err error) { p.resolve(struct{}{}, err) }); err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}
