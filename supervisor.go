package leveret

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/internal/topology"
)

// generation is one connection of a Client (session.Generation).
type generation = session.Generation

func (c *Client) newGeneration(d dialed, num uint64) *generation {
	return &generation{
		Conn:     mux.New(d.nc, d.fr, newMuxConfig(d.tuning, c.eps[d.ep].cfg, c.onBlocked, c.dispatch.kick)),
		Tuning:   d.tuning,
		Num:      num,
		Endpoint: c.eps[d.ep].u.String(),
	}
}

// stableAfter is how long a connection must have served, after its
// recovery, for its loss to start the reconnect policy over: a connection
// the broker closes during or right after recovery (a replayed declaration
// it refuses) is lost within milliseconds; one that served this long costs
// at most one immediate redial per stableAfter, within the bound of two
// dials a second.
const stableAfter = time.Second

// newSupervisor makes the client's supervisor (internal/session): it
// waits for first to end and, unless Close ended it, reconnects under the
// policy and runs the recovery's steps in order on each new connection:
// the recorded topology, then the parked operations, the Client.Consume
// consumers and the explicit channels.
func (c *Client) newSupervisor(first *generation) *session.Supervisor[*generation] {
	var policy session.Policy
	if c.policy != nil {
		policy = c.policy
	}
	cfg := session.Config{Policy: policy, StableAfter: stableAfter,
		Forced: func(err error) bool { return errors.Is(err, ErrConnectionForced) }}
	return session.New(c.supCtx, (*sessionOwner)(c), first, cfg,
		session.StepFunc[*generation](c.recoverTopology),
		session.StepFunc[*generation](c.reg.ready),
		session.StepFunc[*generation](func(g *generation) { c.recoverConsumers(g, c.recovering) }),
		session.StepFunc[*generation](func(g *generation) { c.recoverChannels(g, c.recovering) }))
}

// sessionOwner is the Client as the supervisor's session.Owner; its
// methods run on the supervisor goroutine.
type sessionOwner Client

// Down parks what ran on the lost connection g.
func (o *sessionOwner) Down(g *generation, cause error) {
	c := (*Client)(o)
	c.reg.offline(g)
	c.emit(Event{Kind: EventDisconnected, Err: cause})
}

// Dial tries the endpoints once each, in order, reporting each attempt
// (EventReconnecting) and logging each failure.
func (o *sessionOwner) Dial(ctx context.Context, r session.Round) (*generation, bool, error) {
	c := (*Client)(o)
	d, round, err := dialRound(ctx, c.eps, func(i int, prev error) {
		if prev == nil {
			prev = r.Prev
		}
		c.emit(Event{Kind: EventReconnecting, Attempt: r.Attempt, Delay: r.Delay, Endpoint: c.eps[i].u.String(), Err: prev})
	})
	if err == nil {
		return c.newGeneration(d, c.gen.Load().Num+1), true, nil
	}
	if round == nil {
		return nil, false, err
	}
	for i, err := range round {
		c.cfg.logger.Warn("amqp: reconnect attempt failed", "attempt", r.Attempt, "endpoint", c.eps[i].u.String(), "error", err)
	}
	return nil, true, joinRound(round)
}

// Up installs g, unless Close came first, and starts its report.
func (o *sessionOwner) Up(g *generation) bool {
	c := (*Client)(o)
	if !c.reg.install(g) {
		g.Conn.Abort(ErrClosed)
		return false
	}
	c.blocked.Store(false)
	c.recovering = &Recovery{Renamed: make(map[string]string)}
	c.emit(Event{Kind: EventConnected, Endpoint: g.Endpoint})
	return true
}

// Recovered reports the recovery, with the record's items the broker
// refused on connections that did not survive their recovery.
func (o *sessionOwner) Recovered(*generation) {
	c := (*Client)(o)
	rep := c.recovering
	rep.Failed = append(rep.Failed, c.refusedReplays...)
	c.refusedReplays, c.recovering = nil, nil
	c.emit(Event{Kind: EventRecovered, Recovery: rep})
}

// End ends the client with err.
func (o *sessionOwner) End(err error) { (*Client)(o).finish(err) }

// finish ends the client for good with err: what waited for a connection
// fails, consumers waiting to be recovered end, Done is closed.
func (c *Client) finish(err error) {
	c.finishOnce.Do(func() {
		c.reg.end(err)
		c.endErr = err
		close(c.done)
		c.emit(Event{Kind: EventClosed, Err: err})
	})
}

// recoveryWait bounds how long the supervisor waits for one answer in a
// recovery step. A connection that stops answering is caught by its
// heartbeat first.
const recoveryWait = topology.AnswerWait

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
