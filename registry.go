package leveret

import (
	"sync"

	"github.com/leveret-mq/leveret/internal/session"
)

// registry is what a Client restores on a new connection besides its
// topology, for the public types that own it: the Client.Consume
// consumers, the explicit channels and the Client.Get channels. It also
// holds the gate (session.Gate) through which every operation reaches the
// current connection or waits for the next one; the pool
// (internal/pool) shares it.
type registry struct {
	c *Client

	gate *session.Gate[*generation]

	mu        sync.Mutex
	gets      map[string]*getChan    // Client.Get's channels, by queue
	ended     error                  // the client has ended: no consumer registers any more
	consumers map[*Consumer]struct{} // Client.Consume consumers, restarted on a new connection
	channels  map[*Channel]struct{}  // explicit channels, re-opened on a new connection
	retrying  sync.WaitGroup         // armed consumer retry timers and their callbacks (consumerretry.go)
}

func newRegistry(c *Client, g *generation) *registry {
	return &registry{c: c, gate: session.NewGate(g, c.policy != nil), gets: make(map[string]*getChan),
		consumers: make(map[*Consumer]struct{}), channels: make(map[*Channel]struct{})}
}
