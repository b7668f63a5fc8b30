package leveret

import (
	"context"
	"errors"

	"github.com/leveret-mq/leveret/internal/session"
)

// What the client does with operations while it reconnects. Operations that were in
// flight when the connection dropped, or are issued before the next one is
// ready, are parked (session.Gate) and re-sent, in order, once it is; if
// the client ends first they fail with its error. Parking is decided under
// the gate's lock against the connection the operation saw, so an
// operation never parks after the list was drained for a newer connection.

// errOffline is what the lookups of the pool and the registry report while no connection is
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
	if errors.As(err, &ce) && c.reg.reconnects() {
		select {
		case <-g.Conn.Dead():
		case <-ctx.Done():
			return false
		}
	}
	return g.Conn.Err() != nil && c.reg.reconnects()
}

// retryLater runs run on the next connection if the client reconnects:
// at once if a newer one than seen is ready already, else once it is. If
// the client does not reconnect (WithReconnect(nil)) or has ended, fail
// gets err, or the client's end (session.Gate.RetryLater).
func (r *registry) retryLater(seen *generation, err error, run func(), fail func(error)) {
	r.gate.RetryLater(seen, err, run, fail)
}

// reconnects reports whether a connection lost now will be replaced. It
// takes no lock (callers may hold a Channel's).
func (r *registry) reconnects() bool { return r.gate.Reconnects() }

// current is the connection operations go to; nil while the client
// reconnects (and recovers). It takes no lock.
func (r *registry) current() *generation {
	g, _ := r.gate.Current()
	return g
}

// offline marks g as gone: operations park until ready installs the next
// connection. Idempotent; any goroutine that notices g's end may call it.
func (r *registry) offline(g *generation) { r.gate.Offline(g) }

// install makes g the client's latest connection, for the supervisor to
// recover; operations still park until ready. It reports false if the
// client has ended (Close came first): g must then be closed.
func (r *registry) install(g *generation) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended != nil {
		return false
	}
	r.c.gen.Store(g)
	return true
}

// ready lets operations go to g and re-sends the parked ones, in the order
// they parked. It runs on the supervisor once g carries the recorded
// topology again.
func (r *registry) ready(g *generation) { r.gate.Ready(g) }

// end stops parking: the parked operations fail with err, waiters wake,
// and consumers waiting for a connection end.
func (r *registry) end(err error) {
	r.mu.Lock()
	if r.ended != nil {
		r.mu.Unlock()
		return
	}
	r.ended = err
	var waiting []*Consumer
	for cs := range r.consumers {
		r.stopRetryLocked(cs)
		if ch := cs.channel(); ch == nil || ch.mux().Err() != nil {
			waiting = append(waiting, cs)
		}
	}
	r.mu.Unlock()
	r.gate.End(err)
	for _, cs := range waiting {
		cs.end(err)
	}
	r.endSuspended(err)
}

// waitLive returns the connection operations go to, waiting while the
// client reconnects, until ctx ends or the client does.
func (r *registry) waitLive(ctx context.Context) (*generation, error) { return r.gate.WaitLive(ctx) }
