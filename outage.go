package leveret

import (
	"context"
	"errors"
)

// What the pool does while the client reconnects. Operations that were in
// flight when the connection dropped, or are issued before the next one is
// ready, are parked (pool.parked) and re-sent, in order, once it is; if the
// client ends first they fail with its error. Parking is decided under
// pool.mu against the connection the operation saw, so an operation never
// parks after the list was drained for a newer connection.

// errOffline is what the pool's lookups report while no connection is
// ready; the operation is parked, never failed with it.
var errOffline = errors.New("amqp: reconnecting")

// connLost reports whether err says the operation's connection ended (or
// none was ready): then it may go out on the next one.
func connLost(err error) bool {
	return errors.Is(err, errOffline) || isConnectionError(err)
}

// droppedWith reports whether err, which an operation on g met, says that
// g's connection has ended and the client replaces it. A *ConnectionError
// can come a moment before that end is complete (fail refuses output
// before Dead closes), so it waits for Dead, under ctx (false if ctx ends
// first).
func (c *Client) droppedWith(ctx context.Context, g *generation, err error) bool {
	var ce *ConnectionError
	if errors.As(err, &ce) && c.pool.reconnects() {
		select {
		case <-g.conn.Dead():
		case <-ctx.Done():
			return false
		}
	}
	return g.conn.Err() != nil && c.pool.reconnects()
}

// retryLater runs run on the next connection if the client reconnects:
// at once if a newer one than seen is ready already, else once it is. If
// the client does not reconnect (WithReconnect(nil)) or has ended, fail
// gets err, or the client's end.
func (p *pool) retryLater(seen *generation, err error, run func(), fail func(error)) {
	p.mu.Lock()
	switch {
	case !p.recovers:
	case p.ended != nil:
		err = p.ended
	default:
		if g := p.gen.Load(); g != nil && g != seen && g.conn.Err() == nil {
			p.mu.Unlock()
			run()
			return
		}
		p.parked = append(p.parked, parkedOp{run: run, fail: fail})
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	fail(err)
}

// reconnects reports whether a connection lost now will be replaced. It
// takes no lock (callers may hold a Channel's).
func (p *pool) reconnects() bool { return p.recovers && !p.over.Load() }

// offline marks g as gone: operations park until ready installs the next
// connection. Idempotent; any goroutine that notices g's end may call it.
func (p *pool) offline(g *generation) {
	p.mu.Lock()
	p.offlineLocked(g)
	p.mu.Unlock()
}

func (p *pool) offlineLocked(g *generation) {
	if !p.recovers || p.ended != nil {
		return
	}
	if p.gen.Load() == g {
		p.gen.Store(nil)
	}
	if p.gen.Load() == nil && p.up == nil {
		p.up = make(chan struct{})
	}
}

// install makes g the client's latest connection, for the supervisor to
// recover; operations still park until ready. It reports false if the
// client has ended (Close came first): g must then be closed.
func (p *pool) install(g *generation) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended != nil {
		return false
	}
	p.c.gen.Store(g)
	return true
}

// ready lets operations go to g and re-sends the parked ones, in the order
// they parked. It runs on the supervisor once g carries the recorded
// topology again.
func (p *pool) ready(g *generation) {
	p.mu.Lock()
	if p.ended != nil {
		p.mu.Unlock()
		return
	}
	p.gen.Store(g)
	up, parked := p.up, p.parked
	p.up, p.parked = nil, nil
	p.mu.Unlock()
	if up != nil {
		close(up)
	}
	for _, op := range parked {
		op.run()
	}
}

// end stops parking: the parked operations fail with err, waiters wake,
// and consumers waiting for a connection end.
func (p *pool) end(err error) {
	p.mu.Lock()
	if p.ended != nil {
		p.mu.Unlock()
		return
	}
	p.ended = err
	p.over.Store(true)
	up, parked := p.up, p.parked
	p.up, p.parked = nil, nil
	var waiting []*Consumer
	for cs := range p.consumers {
		p.stopRetryLocked(cs)
		if ch := cs.channel(); ch == nil || ch.mux().Err() != nil {
			waiting = append(waiting, cs)
		}
	}
	p.mu.Unlock()
	if up != nil {
		close(up)
	}
	for _, op := range parked {
		op.fail(err)
	}
	for _, cs := range waiting {
		cs.end(err)
	}
	p.endSuspended(err)
}

// waitLive returns the connection operations go to, waiting while the
// client reconnects, until ctx ends or the client does.
func (p *pool) waitLive(ctx context.Context) (*generation, error) {
	for {
		if g := p.gen.Load(); g != nil && (g.conn.Err() == nil || !p.recovers) {
			return g, nil // without reconnecting, a dead one reports its own error
		}
		p.mu.Lock()
		if p.ended != nil {
			err := p.ended
			p.mu.Unlock()
			return nil, err
		}
		if g := p.gen.Load(); g != nil && g.conn.Err() != nil {
			p.offlineLocked(g) // noticed before the supervisor did
		}
		up := p.up
		p.mu.Unlock()
		if up == nil {
			continue // ready meanwhile
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
