package topology

import (
	"github.com/leveret-mq/leveret/internal/proto"
)

// A recorded declaration the broker now refuses by closing the connection
// (its configuration changed: RabbitMQ 4.x refusing transient non-exclusive
// queues, 541; a plugin removed, 503) would close every new connection
// during its replay. The replay therefore reads the close's blame
// (mux.Blame): the culprit is dropped from the record and reported; when
// several items could be meant, they are marked as suspects and replayed
// one at a time, after the others, on the next connection, so the culprit
// is the one in flight at the next close. The root package's suspects.go
// applies the same rule to the pool's operations.

// itemKey names a replay item in the record's suspect set.
func itemKey(item item) string {
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
func (r *Record) setSuspect(item item, on bool) {
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

func (r *Record) suspected(item item) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suspects[itemKey(item)]
}

// refused drops a recorded item the broker closed the connection over, as
// if it had been deleted (with the bindings that name it).
func (r *Record) refused(item item) {
	r.setSuspect(item, false)
	switch m := item.m.(type) {
	case *proto.ExchangeDeclare:
		r.Observe(&proto.ExchangeDelete{Exchange: m.Exchange}, nil)
	case *proto.QueueDeclare:
		name := m.Queue
		if item.serverNamed != "" {
			name = item.serverNamed
		}
		r.Observe(&proto.QueueDelete{Queue: name}, nil)
	case *proto.QueueBind:
		r.Observe(&proto.QueueUnbind{Queue: m.Queue, Exchange: m.Exchange, RoutingKey: m.RoutingKey, Arguments: m.Arguments}, nil)
	case *proto.ExchangeBind:
		r.Observe(&proto.ExchangeUnbind{Destination: m.Destination, Source: m.Source, RoutingKey: m.RoutingKey, Arguments: m.Arguments}, nil)
	}
}
