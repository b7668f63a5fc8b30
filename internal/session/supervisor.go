// Package session keeps a client's connection going: the supervisor waits
// for the current connection to end, reconnects under the reconnect
// policy, and runs the recovery, one ordered list of steps, on each new
// connection. It decides in one place what a connection that dies during
// a step means: stop, back off, start again. It knows nothing of what the
// steps restore; the root package supplies them and the dialing, through
// Owner. It imports neither the root nor any other package of leveret.
package session

import (
	"context"
	"fmt"
	"time"
)

// Conn is one connection as the supervisor sees it. It is single-use:
// when it ends, the supervisor makes the next.
type Conn interface {
	// Join returns once the connection has ended and its goroutines have
	// exited: then everything that ran on it has been told.
	Join()
	// Err is nil while the connection is up, then why it ended.
	Err() error
}

// Policy paces reconnecting: the delay before each round of attempts, and
// when to give up. The root's ReconnectPolicy satisfies it.
type Policy interface {
	Next() (delay time.Duration, ok bool)
	Reset()
}

// Round is one round of connection attempts (every endpoint once).
type Round struct {
	Attempt int           // from 1 after each loss
	Delay   time.Duration // waited before it; 0 for a round dialled at once
	Prev    error         // why the round before failed; for the first, why the connection ended
}

// Owner is the session the supervisor drives (the root's Client). Its
// methods run on the supervisor goroutine; none may wait for it.
type Owner[C Conn] interface {
	// Down is told that c ended with cause and a new connection will be
	// made: what runs on c waits for the next one.
	Down(c C, cause error)
	// Dial makes one round of attempts. A failure that is not worth
	// retrying returns retry false: it ends the session.
	Dial(ctx context.Context, r Round) (c C, retry bool, err error)
	// Up makes c the current connection, before its recovery. It returns
	// false if the session is closing (the owner then ends c).
	Up(c C) bool
	// Recovered is told that every step ran on c and c is still up.
	Recovered(c C)
	// End ends the session for good with err. It is not called when the
	// supervisor's ctx ended (the owner's Close ends the session itself).
	End(err error)
}

// Step is one step of a recovery (re-declaring the topology, restarting
// consumers, ...). Recover blocks until the step is done on c or c has
// ended; the supervisor checks c.Err after each step.
type Step[C Conn] interface {
	Recover(c C)
}

// StepFunc makes a function a Step.
type StepFunc[C Conn] func(C)

// Recover implements Step.
func (f StepFunc[C]) Recover(c C) { f(c) }

// Config is how the supervisor reconnects.
type Config struct {
	// Policy paces the rounds; nil: a lost connection ends the session.
	Policy Policy
	// StableAfter is how long a connection must serve, after its
	// recovery, for its loss to start the policy over and be redialled at
	// once. A connection the broker closes during or right after its
	// recovery (a replayed declaration it refuses) is lost within
	// milliseconds, so it backs off further instead of storming.
	StableAfter time.Duration
	// Forced reports a cause that ends a connection through no fault of
	// this client (RabbitMQ's 320 CONNECTION_FORCED: an operator's
	// close_connection, a node going down): after a recovery, such a
	// loss counts as served however short. Nil: none does.
	Forced func(cause error) bool
}

// Supervisor reconnects one session. Run is its goroutine's body.
type Supervisor[C Conn] struct {
	ctx   context.Context // ends when the owner closes: cuts short a delay, dial or step
	owner Owner[C]
	cfg   Config
	steps []Step[C]
	first C
}

// New makes the supervisor of the session whose first connection, already
// recovered (it had nothing to recover), is first. steps run in order on
// every new connection.
func New[C Conn](ctx context.Context, owner Owner[C], first C, cfg Config, steps ...Step[C]) *Supervisor[C] {
	return &Supervisor[C]{ctx: ctx, owner: owner, cfg: cfg, steps: steps, first: first}
}

// Run supervises until the session ends: its ctx ends (the owner's Close),
// the policy is nil or gives up, or a failure is not worth retrying. It is
// the only goroutine that dials after the first connection.
func (s *Supervisor[C]) Run() {
	c := s.first
	upSince := time.Now() // of the current connection, once recovered
	for {
		c.Join()
		if s.ctx.Err() != nil {
			return // the owner's Close finishes the session
		}
		cause := c.Err()
		if s.cfg.Policy == nil {
			s.owner.End(cause)
			return
		}
		s.owner.Down(c, cause)
		stable := s.servedWell(upSince, cause)
		if stable {
			s.cfg.Policy.Reset()
		}
		upSince = time.Time{}
		next, err := s.redial(stable, cause)
		if err != nil {
			if s.ctx.Err() == nil {
				s.owner.End(err)
			}
			return
		}
		if !s.owner.Up(next) {
			return
		}
		c = next
		if !s.recover(c) {
			continue // lost during a step: not recovered; what is left waits for the next
		}
		upSince = time.Now()
		s.owner.Recovered(c)
	}
}

// recover runs the steps in order on c. It is the one place that decides
// what a connection that died during a step means: the steps after it do
// not run, the recovery is not reported, and the loss, like any loss of a
// connection that did not serve, backs off before the next round.
func (s *Supervisor[C]) recover(c C) bool {
	for _, step := range s.steps {
		step.Recover(c)
		if c.Err() != nil || s.ctx.Err() != nil {
			return false
		}
	}
	return true
}

// servedWell reports whether a connection recovered at upSince (zero if
// it never was) and lost with cause served: it stayed up StableAfter, or
// cause was forced.
func (s *Supervisor[C]) servedWell(upSince time.Time, cause error) bool {
	if upSince.IsZero() {
		return false
	}
	return time.Since(upSince) >= s.cfg.StableAfter || s.cfg.Forced != nil && s.cfg.Forced(cause)
}

// redial dials round after round until a connection is made: the first
// round at once after a connection that served, every other after the
// policy's delay. It returns an error when ctx ends, the policy gives up
// or a failure is not worth retrying.
func (s *Supervisor[C]) redial(immediate bool, cause error) (C, error) {
	var zero C
	last := cause
	for attempt := 1; ; attempt++ {
		var delay time.Duration
		if !immediate || attempt > 1 {
			d, ok := s.cfg.Policy.Next()
			if !ok {
				return zero, fmt.Errorf("amqp: reconnect: the reconnect policy gave up: %w", last)
			}
			delay = d
			if err := Sleep(s.ctx, delay); err != nil {
				return zero, err
			}
		}
		c, retry, err := s.owner.Dial(s.ctx, Round{Attempt: attempt, Delay: delay, Prev: last})
		if err == nil {
			return c, nil
		}
		if !retry {
			return zero, fmt.Errorf("amqp: reconnect: %w", err)
		}
		last = err
	}
}

// Sleep waits d, or until ctx ends (then its cause). Every wait of a
// recovery is one: the owner's Close cuts it short.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
