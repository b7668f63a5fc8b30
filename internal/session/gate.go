package session

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrOffline is what Gate.Current's callers report while no connection is
// ready; an operation that meets it is parked, never failed with it.
var ErrOffline = errors.New("amqp: reconnecting")

// Gate is where a session's operations go: the current connection, or,
// while the session reconnects, a list of parked operations that run in
// the order they parked once the next connection is ready (Ready), or fail
// if the session ends first (End). Parking is decided under the gate's
// lock against the connection the operation saw, so nothing parks after
// the list was drained for a newer connection. The gate never calls out
// while holding its lock, and takes no other lock: callers may hold
// theirs.
type Gate[C interface {
	Conn
	comparable
}] struct {
	recovers bool
	cur      atomic.Pointer[box[C]] // nil while offline
	over     atomic.Bool            // ended, for readers that take no lock

	mu     sync.Mutex
	up     chan struct{} // while offline: closed once a connection is ready
	parked []parked
	ended  error
}

type box[C any] struct{ c C }

type parked struct {
	run  func()
	fail func(error)
}

// NewGate makes the gate of a session whose first connection is first.
// recovers says whether a lost connection is replaced: without it, nothing
// parks and operations fail with the error they met.
func NewGate[C interface {
	Conn
	comparable
}](first C, recovers bool) *Gate[C] {
	g := &Gate[C]{recovers: recovers}
	g.cur.Store(&box[C]{first})
	return g
}

// Current returns the connection operations go to, or false while the
// session reconnects. It takes no lock.
func (g *Gate[C]) Current() (C, bool) {
	if b := g.cur.Load(); b != nil {
		return b.c, true
	}
	var zero C
	return zero, false
}

// Reconnects reports whether a connection lost now will be replaced. It
// takes no lock.
func (g *Gate[C]) Reconnects() bool { return g.recovers && !g.over.Load() }

// RetryLater runs run on the next connection if the session reconnects: at
// once if a newer connection than seen is ready already, else once Ready
// is called. If the session does not reconnect or has ended, fail gets err,
// or the session's end. Neither runs under the gate's lock.
func (g *Gate[C]) RetryLater(seen C, err error, run func(), fail func(error)) {
	g.mu.Lock()
	switch {
	case !g.recovers:
	case g.ended != nil:
		err = g.ended
	default:
		if c, ok := g.Current(); ok && c != seen && c.Err() == nil {
			g.mu.Unlock()
			run()
			return
		}
		g.parked = append(g.parked, parked{run: run, fail: fail})
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	fail(err)
}

// Offline marks c as gone: operations park until Ready. Idempotent; any
// goroutine that notices c's end may call it.
func (g *Gate[C]) Offline(c C) {
	g.mu.Lock()
	g.offlineLocked(c)
	g.mu.Unlock()
}

func (g *Gate[C]) offlineLocked(c C) {
	if !g.recovers || g.ended != nil {
		return
	}
	if b := g.cur.Load(); b != nil && b.c == c {
		g.cur.Store(nil)
	}
	if g.cur.Load() == nil && g.up == nil {
		g.up = make(chan struct{})
	}
}

// Ready lets operations go to c and runs the parked ones, in the order
// they parked, on the calling goroutine. After End it does nothing.
func (g *Gate[C]) Ready(c C) {
	g.mu.Lock()
	if g.ended != nil {
		g.mu.Unlock()
		return
	}
	g.cur.Store(&box[C]{c})
	for _, op := range g.drainUnlock() {
		op.run()
	}
}

// drainUnlock takes the parked operations, releases the lock and wakes
// WaitLive's waiters.
func (g *Gate[C]) drainUnlock() []parked {
	up, list := g.up, g.parked
	g.up, g.parked = nil, nil
	g.mu.Unlock()
	if up != nil {
		close(up)
	}
	return list
}

// End stops parking for good: the parked operations fail with err, on the
// calling goroutine, and WaitLive returns err. Only the first call counts.
func (g *Gate[C]) End(err error) {
	g.mu.Lock()
	if g.ended != nil {
		g.mu.Unlock()
		return
	}
	g.ended = err
	g.over.Store(true)
	for _, op := range g.drainUnlock() {
		op.fail(err)
	}
}

// WaitLive returns the connection operations go to, waiting while the
// session reconnects, until ctx ends or the session does. Without
// reconnecting, a dead connection is returned: operations on it report
// its own error.
func (g *Gate[C]) WaitLive(ctx context.Context) (C, error) {
	var zero C
	for {
		if c, ok := g.Current(); ok && (c.Err() == nil || !g.recovers) {
			return c, nil
		}
		g.mu.Lock()
		if g.ended != nil {
			err := g.ended
			g.mu.Unlock()
			return zero, err
		}
		if c, ok := g.Current(); ok && c.Err() != nil {
			g.offlineLocked(c) // noticed before the supervisor did
		}
		up := g.up
		g.mu.Unlock()
		if up == nil {
			continue // ready meanwhile
		}
		select {
		case <-up:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}
