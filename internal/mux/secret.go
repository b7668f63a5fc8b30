package mux

import "github.com/leveret-mq/leveret/internal/proto"

// UpdateSecret sends connection.update-secret on channel 0; done gets nil
// once the broker answers update-secret-ok, or the error that ended the
// connection first. It runs on the reader goroutine and must not block. An
// error means nothing was sent and done will not be called.
func (c *Conn) UpdateSecret(secret, reason string, done func(error)) error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if c.chansDead || c.closing.Load() {
		return c.closedErr()
	}
	// Queued under cmu with the waiter, so waiters are in wire order.
	if err := c.enqueueMethod(0, &proto.ConnectionUpdateSecret{NewSecret: secret, Reason: reason}, nil); err != nil {
		return err
	}
	c.secretWaiters = append(c.secretWaiters, done)
	return nil
}

// secretUpdated completes the oldest update-secret; it reports false if none
// was pending (a reply nobody asked for).
func (c *Conn) secretUpdated() bool {
	c.cmu.Lock()
	if len(c.secretWaiters) == 0 {
		c.cmu.Unlock()
		return false
	}
	done := c.secretWaiters[0]
	c.secretWaiters = c.secretWaiters[1:]
	c.cmu.Unlock()
	done(nil)
	return true
}
