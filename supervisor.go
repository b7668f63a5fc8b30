package leveret

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
)

// generation is one connection of a Client: the mux.Conn and what its
// handshake negotiated. It is single-use: when it ends, the supervisor
// makes the next one; nothing revives it.
type generation struct {
	conn     *mux.Conn
	tuning   tuning
	num      uint64
	endpoint string // the URL, without its password
}

func (c *Client) newGeneration(d dialed, num uint64) *generation {
	return &generation{
		conn:     mux.New(d.nc, d.fr, newMuxConfig(d.tuning, c.eps[d.ep].cfg, c.onBlocked, c.dispatch.kick)),
		tuning:   d.tuning,
		num:      num,
		endpoint: c.eps[d.ep].u.String(),
	}
}

// supervise is the client's supervisor goroutine (owner: Client; started
// by newClient, joined by Close). It waits for the current connection to
// end; unless Close ended it, it reconnects under the reconnect policy and
// recovers the client's record on the new connection, or ends the client
// when the policy is off, gives up, or a failure is not worth retrying. It
// is the only goroutine that dials after Dial.
func (c *Client) supervise() {
	defer c.sup.Done()
	upSince := time.Now() // of the current connection, once recovered
	for {
		g := c.gen.Load()
		// Join its reader and writer once it ends: then every channel of g
		// has been told, so what will be re-sent is all parked.
		g.conn.Join()
		if c.isClosing() {
			return // Close finishes the client
		}
		cause := g.conn.Err()
		if c.policy == nil {
			c.finish(cause)
			return
		}
		c.pool.offline(g)
		c.emit(Event{Kind: EventDisconnected, Err: cause})
		// Only a connection that served starts the policy over, and is
		// redialled at once: one that died during or right after its
		// recovery (a declaration the broker refuses by closing the
		// connection, a broker that accepts and drops) backs off further.
		stable := servedWell(upSince, cause)
		if stable {
			c.policy.Reset()
		}
		upSince = time.Time{}
		ng, err := c.redial(g.num+1, stable, cause)
		if err != nil {
			if !c.isClosing() {
				c.finish(err)
			}
			return
		}
		if !c.pool.install(ng) { // Close came first
			ng.conn.Abort(ErrClosed)
			return
		}
		c.blocked.Store(false)
		c.emit(Event{Kind: EventConnected, Endpoint: ng.endpoint})
		rep := c.recoverOn(ng)
		if ng.conn.Err() != nil {
			continue // lost again while recovering: the record is still there
		}
		c.pool.ready(ng)
		c.recoverConsumers(ng, rep)
		c.recoverChannels(ng, rep)
		if ng.conn.Err() != nil {
			continue // lost while restarting consumers: not recovered; what is left waits for the next
		}
		upSince = time.Now()
		rep.Failed = append(rep.Failed, c.refusedReplays...)
		c.refusedReplays = nil
		c.emit(Event{Kind: EventRecovered, Recovery: rep})
	}
}

// stableAfter is how long a connection must have served, after its
// recovery, for its loss to start the reconnect policy over. A connection
// the broker closes during or right after recovery (a replayed
// declaration it refuses) is lost within milliseconds; one that served
// this long costs at most one immediate redial per stableAfter, within the
// bound of two dials a second.
const stableAfter = time.Second

// servedWell reports whether a connection recovered at upSince (zero if
// it never was) and lost with cause served: it stayed up stableAfter, or
// the broker closed it with 320 CONNECTION_FORCED after its recovery (an
// operator's close_connection or a node going down: nothing this client
// did, so no reason to slow its return).
func servedWell(upSince time.Time, cause error) bool {
	if upSince.IsZero() {
		return false
	}
	return time.Since(upSince) >= stableAfter || errors.Is(cause, ErrConnectionForced)
}

// redial tries the endpoints in order, round after round, until one
// connects: at once for the first round after a stable connection, else
// after the policy's delay. It returns an error when Close ends it, the
// policy gives up or a failure is not worth retrying. cause is why the
// last connection ended: the error EventReconnecting carries for the
// first attempt; later ones carry the attempt before them.
func (c *Client) redial(num uint64, immediate bool, cause error) (*generation, error) {
	last := cause
	for attempt := 1; ; attempt++ {
		var delay time.Duration
		if !immediate || attempt > 1 {
			d, ok := c.policy.Next()
			if !ok {
				return nil, fmt.Errorf("amqp: reconnect: the reconnect policy gave up: %w", last)
			}
			delay = d
			if err := sleepCtx(c.supCtx, delay); err != nil {
				return nil, err
			}
		}
		d, round, err := dialRound(c.supCtx, c.eps, func(i int, prev error) {
			if prev == nil {
				prev = last
			}
			c.emit(Event{Kind: EventReconnecting, Attempt: attempt, Delay: delay, Endpoint: c.eps[i].u.String(), Err: prev})
		})
		if err == nil {
			return c.newGeneration(d, num), nil
		}
		if round == nil {
			return nil, fmt.Errorf("amqp: reconnect: %w", err)
		}
		for i, err := range round {
			c.cfg.logger.Warn("amqp: reconnect attempt failed", "attempt", attempt, "endpoint", c.eps[i].u.String(), "error", err)
		}
		last = joinRound(round)
	}
}

// finish ends the client for good with err: what waited for a connection
// fails, consumers waiting to be recovered end, Done is closed.
func (c *Client) finish(err error) {
	c.finishOnce.Do(func() {
		c.pool.end(err)
		c.endErr = err
		close(c.done)
		c.emit(Event{Kind: EventClosed, Err: err})
	})
}

func (c *Client) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// recoveryWait bounds how long the supervisor waits for one step of a
// recovery (a batch of re-declarations). A connection that stops answering
// is caught by its heartbeat first.
const recoveryWait = time.Minute

// waitRecovery waits for p on behalf of the supervisor: until it settles,
// Close begins, or recoveryWait passes.
func waitRecovery[T any](c *Client, p *Promise[T]) (T, error) {
	ctx, cancel := context.WithTimeout(c.supCtx, recoveryWait)
	defer cancel()
	v, err := p.Wait(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("amqp: recovery step took longer than %v: %w", recoveryWait, err)
	}
	return v, err
}
