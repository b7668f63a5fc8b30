package leveret

import (
	"fmt"
	"time"
)

// State is where a Client is in its life; see Client.State.
type State int32

const (
	// StateConnected: a connection is open and recovered; operations go out.
	StateConnected State = iota + 1
	// StateReconnecting: the connection dropped and the client is waiting
	// out the reconnect policy's delay, dialing, or recovering what it
	// recorded. Client-level operations wait for the next connection.
	StateReconnecting
	// StateClosed: Close was called, the reconnect policy gave up, or a
	// failure was not worth retrying. Err says why.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventConnected: a connection was made (Endpoint says where); after a
	// drop, EventRecovered follows once what was recorded is re-declared.
	EventConnected EventKind = iota + 1
	// EventDisconnected: the connection dropped (Err says why); the client
	// reconnects.
	EventDisconnected
	// EventReconnecting: a connection attempt to Endpoint is about to start,
	// the Attempt-th round, after waiting Delay.
	EventReconnecting
	// EventRecovered: the new connection carries the recorded topology and
	// consumers again (Recovery says what); operations flow.
	EventRecovered
	// EventClosed: the client has ended for good (Err says why).
	EventClosed
	// EventMessageRefused: a delivery or a returned message was over
	// WithMaxMessageSize; its body was skipped, never buffered, and a
	// delivery was rejected without requeue (so a dead-letter exchange
	// gets it) unless its consumer is no-ack. Err wraps ErrMessageTooLarge
	// and names the queue, the size and the limit. The connection and the
	// consumer go on.
	EventMessageRefused
	// EventConsumerRefused: the broker refused to restart a Client.Consume
	// consumer after a reconnect (Err says why: its queue is missing, say),
	// or stopped a running one whose queue is still there: it closed the
	// consumer's channel (406 on a consumer timeout, say) or cancelled it
	// (Err wraps ErrConsumerCancelled). It does not end: it is started
	// again after Delay (the Attempt-th time), until it works, it is
	// cancelled, or the client closes.
	EventConsumerRefused
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventReconnecting:
		return "reconnecting"
	case EventRecovered:
		return "recovered"
	case EventClosed:
		return "closed"
	case EventMessageRefused:
		return "message refused"
	case EventConsumerRefused:
		return "consumer refused"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a change in a Client's connection, delivered to the handler of
// WithEventHandler.
type Event struct {
	Kind     EventKind
	Err      error         // EventDisconnected, EventClosed: the cause; EventReconnecting: why the attempt before it failed; EventMessageRefused: what was refused
	Attempt  int           // EventReconnecting: the round, from 1; EventConsumerRefused: the retry, from 1
	Delay    time.Duration // EventReconnecting: waited before this round; EventConsumerRefused: until the retry
	Endpoint string        // EventConnected, EventReconnecting: the URL, without its password
	Recovery *Recovery     // EventRecovered
}

// Recovery reports what a reconnect re-declared from the client's record.
type Recovery struct {
	Exchanges, Queues, Bindings, Consumers int // re-declared or restarted
	Channels                               int // explicit channels re-opened
	// Renamed maps each server-named queue's old name to the name the
	// broker gave it on the new connection; bindings and consumers that
	// named the old name now name the new one.
	Renamed map[string]string
	// Failed holds one error per entity or consumer that could not be
	// recovered (say, a queue redeclared by someone else with other
	// arguments). The others were recovered all the same.
	Failed []error
}

// WithEventHandler sets a handler for connection events: connected,
// disconnected, reconnecting, recovered and closed. It runs on the client's
// dispatcher goroutine, one event at a time in order, with the return,
// confirm and close handlers; it must return promptly. Events are also
// logged with the configured logger. There is no Go channel to drain.
func WithEventHandler(fn func(Event)) Option {
	return optionFunc(func(c *config) { c.onEvent = fn })
}

// State reports where the client is: connected, reconnecting or closed.
// It does not block.
func (c *Client) State() State { return State(c.state.Load()) }

// emit records the state an event implies, logs it, and hands it to the
// user's handler on the dispatcher.
func (c *Client) emit(e Event) {
	switch e.Kind {
	case EventDisconnected, EventReconnecting:
		c.state.Store(int32(StateReconnecting))
	case EventRecovered:
		c.state.Store(int32(StateConnected))
	case EventConnected:
		if c.state.Load() == 0 {
			c.state.Store(int32(StateConnected))
		}
	case EventClosed:
		c.state.Store(int32(StateClosed))
	}
	log := c.cfg.logger
	switch e.Kind {
	case EventConnected:
		log.Info("amqp: connected", "endpoint", e.Endpoint)
	case EventDisconnected:
		log.Warn("amqp: connection lost; reconnecting", "error", e.Err)
	case EventReconnecting:
		log.Info("amqp: reconnecting", "endpoint", e.Endpoint, "attempt", e.Attempt, "delay", e.Delay)
	case EventRecovered:
		r := e.Recovery
		log.Info("amqp: recovered", "exchanges", r.Exchanges, "queues", r.Queues, "bindings", r.Bindings,
			"consumers", r.Consumers, "renamed", len(r.Renamed), "failed", len(r.Failed))
		for _, err := range r.Failed {
			log.Warn("amqp: recovery failed for one entity", "error", err)
		}
	case EventClosed:
		log.Info("amqp: client closed", "error", e.Err)
	case EventMessageRefused:
		log.Warn("amqp: message refused", "error", e.Err)
	case EventConsumerRefused:
		log.Warn("amqp: consumer refused; trying again", "error", e.Err, "attempt", e.Attempt, "delay", e.Delay)
	}
	if fn := c.cfg.onEvent; fn != nil {
		c.dispatch.post(func() { fn(e) })
	}
	if h := c.hooks; h != nil && len(h.conn) > 0 {
		c.dispatch.post(func() {
			for _, x := range h.conn {
				x.OnConnectionEvent(e)
			}
		})
	}
}
