package leveret

import (
	"errors"

	"github.com/leveret-mq/leveret/internal/topology"
)

// recoverTopology is the recovery's first step: it re-declares the
// client's record on g (internal/topology), before any parked operation or
// consumer goes there, into the recovery's report. It runs on the
// supervisor. What the broker closed the connection over left the record;
// it is logged here and reported in the Recovery of the next connection
// that recovers.
func (c *Client) recoverTopology(g *generation) {
	r := c.rec.Replay(c.supCtx, g.Conn, classifyReplay)
	for _, err := range r.Refused {
		c.cfg.logger.Error("amqp: recovery refused", "error", err)
	}
	c.refusedReplays = append(c.refusedReplays, r.Refused...)
	rep := c.recovering
	rep.Exchanges, rep.Queues, rep.Bindings, rep.Failed = r.Exchanges, r.Queues, r.Bindings, r.Failed
	rep.Renamed = r.Renamed
}

// classifyReplay tells the replay what one of this package's errors means.
func classifyReplay(err error) topology.Outcome {
	switch {
	case isConnectionError(err):
		return topology.Lost
	case errors.Is(err, ErrNotExecuted):
		return topology.Discarded
	case errors.Is(err, ErrResourceLocked):
		return topology.Locked
	}
	return topology.Refused
}

// WithTopologyRecovery chooses what a reconnect re-declares from the
// client's record of confirmed topology. filter gets each entity as an
// ops.ExchangeDeclare, ops.QueueDeclare, ops.QueueBind or ops.ExchangeBind
// value and returns whether to re-declare it; nil turns topology recovery
// off (consumers are still restarted). By default everything recorded is
// re-declared. filter runs on the client's supervisor goroutine.
func WithTopologyRecovery(filter func(entity any) bool) Option {
	return optionFunc(func(c *config) { c.topologyFilter, c.topologyOff = filter, filter == nil })
}
