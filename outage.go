package leveret

import (
	"context"
	"errors"

	"github.com/leveret-mq/leveret/internal/session"
)

// What the pool does while the client reconnects. Operations that were in
// flight when the connection dropped, or are issued before the next one is
// ready, are parked (session.Gate) and re-sent, in order, once it is; if
// the client ends first they fail with its error. Parking is decided under
// the gate's lock against the connection the operation saw, so an
// operation never parks after the list was drained for a newer connection.

// errOffline is what the pool's lookups report while no connection is
// ready; the operation is parked, never failed with it.
var errOffline = session.ErrOffline

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
// gets err, or the client's end (session.Gate.RetryLater).
func (p *pool) retryLater(seen *generation, err error, run func(), fail func(error)) {
	p.gate.RetryLater(seen, err, run, fail)
}

// reconnects reports whether a connection lost now will be replaced. It
// takes no lock (callers may hold a Channel's).
func (p *pool) reconnects() bool { return p.gate.Reconnects() }

// current is the connection operations go to; nil while the client
// reconnects (and recovers). It takes no lock.
func (p *pool) current() *generation {
	g, _ := p.gate.Current()
	return g
}

// offline marks g as gone: operations park until ready installs the next
// connection. Idempotent; any goroutine that notices g's end may call it.
func (p *pool) offline(g *generation) { p.gate.Offline(g) }

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
func (p *pool) ready(g *generation) { p.gate.Ready(g) }

// end stops parking: the parked operations fail with err, waiters wake,
// and consumers waiting for a connection end.
func (p *pool) end(err error) {
	p.mu.Lock()
	if p.ended != nil {
		p.mu.Unlock()
		return
	}
	p.ended = err
	var waiting []*Consumer
	for cs := range p.consumers {
		p.stopRetryLocked(cs)
		if ch := cs.channel(); ch == nil || ch.mux().Err() != nil {
			waiting = append(waiting, cs)
		}
	}
	p.mu.Unlock()
	p.gate.End(err)
	for _, cs := range waiting {
		cs.end(err)
	}
	p.endSuspended(err)
}

// waitLive returns the connection operations go to, waiting while the
// client reconnects, until ctx ends or the client does.
func (p *pool) waitLive(ctx context.Context) (*generation, error) { return p.gate.WaitLive(ctx) }
