package leveret

import (
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
)

// A recorded declaration the broker now refuses by closing the connection
// (its configuration changed: RabbitMQ 4.x refusing transient non-exclusive
// queues, 541; a plugin removed, 503) would close every new connection
// during its replay. The replay therefore reads the close's blame
// (mux.Blame): the culprit is dropped from the record and reported; when
// several items could be meant, they are marked as suspects and replayed
// one at a time, after the others, on the next connection, so the culprit
// is the one in flight at the next close. See suspects.go for the same
// rule on the pool's operations.

// itemKey names a replay item in the record's suspect set.
func itemKey(item replayItem) string {
	switch m := item.m.(type) {
	case *proto.ExchangeDeclare:
		return "e\x00" + m.Exchange
	case *proto.QueueDeclare:
		if item.serverNamed != "" {
			return "q\x00" + item.serverNamed
		}
		return "q\x00" + m.Queue
	}
	return bindingKey(item.m)
}

// setSuspect marks or clears a replay item as a suspect of a close.
func (r *record) setSuspect(item replayItem, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !on {
		delete(r.suspects, itemKey(item))
		return
	}
	if r.suspects == nil {
		r.suspects = make(map[string]bool)
	}
	r.suspects[itemKey(item)] = true
}

func (r *record) suspected(item replayItem) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suspects[itemKey(item)]
}

// refused drops a recorded item the broker closed the connection over, as
// if it had been deleted (with the bindings that name it).
func (r *record) refused(item replayItem) {
	r.setSuspect(item, false)
	switch m := item.m.(type) {
	case *proto.ExchangeDeclare:
		r.observe(&proto.ExchangeDelete{Exchange: m.Exchange}, nil)
	case *proto.QueueDeclare:
		name := m.Queue
		if item.serverNamed != "" {
			name = item.serverNamed
		}
		r.observe(&proto.QueueDelete{Queue: name}, nil)
	case *proto.QueueBind:
		r.observe(&proto.QueueUnbind{Queue: m.Queue, Exchange: m.Exchange, RoutingKey: m.RoutingKey, Arguments: m.Arguments}, nil)
	case *proto.ExchangeBind:
		r.observe(&proto.ExchangeUnbind{Destination: m.Destination, Source: m.Source, RoutingKey: m.RoutingKey, Arguments: m.Arguments}, nil)
	}
}

// replayIsolating replays items on g: those not suspected pipelined, then
// each suspect alone. It applies what a close during it blamed: a culprit
// leaves the record (reported in the next Recovery.Failed), suspects are
// marked for the next replay, and a suspect answered is cleared.
func (c *Client) replayIsolating(g *generation, items []replayItem) ([]proto.Method, []error) {
	var plain, suspects []int
	for i, item := range items {
		if c.rec.suspected(item) {
			suspects = append(suspects, i)
		} else {
			plain = append(plain, i)
		}
	}
	replies := make([]proto.Method, len(items))
	errs := make([]error, len(items))
	run := func(idx []int) {
		for k, blame := range c.replayAt(g, items, idx, replies, errs) {
			c.applyBlame(items[idx[k]], blame, errs[idx[k]])
		}
	}
	run(plain)
	for _, i := range suspects {
		if g.conn.Err() != nil {
			errs[i] = g.conn.Err()
			continue
		}
		run([]int{i})
	}
	return replies, errs
}

// applyBlame updates the record from one replayed item's outcome.
func (c *Client) applyBlame(item replayItem, blame mux.Blame, err error) {
	switch {
	case err == nil:
		c.rec.setSuspect(item, false)
	case !connLost(err):
	case blame == mux.Culprit || blame == mux.Suspect && c.rec.suspected(item):
		c.rec.refused(item)
		failure := fmt.Errorf("amqp: recovering %s: the broker closed the connection over it; it is no longer re-declared: %w", describe(item.m), err)
		c.cfg.logger.Error("amqp: recovery refused", "error", failure)
		c.refusedReplays = append(c.refusedReplays, failure)
	case blame == mux.Suspect:
		c.rec.setSuspect(item, true)
	}
}
