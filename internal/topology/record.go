package topology

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Record is the topology a reconnect re-declares: the exchanges, queues
// and bindings the broker confirmed to this client, on any of its channels
// (pool or explicit). It is written from replies, never from requests, so a
// declaration the broker refused is not in it; a delete-ok or unbind-ok
// removes the entity and the bindings that named it. Passive declarations
// and the broker's own entities ("amq." names, the default exchange) are
// not recorded. Replies arrive on reader goroutines, hence mu.
type Record struct {
	filter func(any) bool // WithTopologyRecovery's; nil recovers everything
	off    bool           // WithTopologyRecovery(nil): nothing is re-declared

	mu          sync.Mutex
	seq         uint64 // orders entities by first declaration
	exchanges   map[string]recorded[proto.ExchangeDeclare]
	queues      map[string]recorded[proto.QueueDeclare] // by the broker's name
	serverNamed map[string]bool
	bindings    map[string]recorded[proto.Method] // *proto.QueueBind or *proto.ExchangeBind, by bindingKey
	suspects    map[string]bool                   // items a connection close may have meant, by itemKey (suspects.go)
}

type recorded[T any] struct {
	seq uint64
	m   T
}

// NewRecord makes an empty record. filter (nil: everything) chooses what a
// replay re-declares, as ops.ExchangeDeclare, ops.QueueDeclare,
// ops.QueueBind or ops.ExchangeBind values; off turns replaying off.
func NewRecord(filter func(any) bool, off bool) *Record {
	return &Record{
		filter:      filter,
		off:         off,
		exchanges:   make(map[string]recorded[proto.ExchangeDeclare]),
		queues:      make(map[string]recorded[proto.QueueDeclare]),
		serverNamed: make(map[string]bool),
		bindings:    make(map[string]recorded[proto.Method]),
	}
}

// Observe records what the broker's reply to m confirmed. It runs on a
// reader goroutine and never blocks.
func (r *Record) Observe(m, reply proto.Method) {
	switch m := m.(type) {
	case *proto.ExchangeDeclare:
		if m.Passive || brokerOwned(m.Exchange) {
			return
		}
		r.mu.Lock()
		r.exchanges[m.Exchange] = recorded[proto.ExchangeDeclare]{r.seqOf(r.exchanges[m.Exchange].seq), *m}
		r.mu.Unlock()
	case *proto.ExchangeDelete:
		r.mu.Lock()
		delete(r.exchanges, m.Exchange)
		r.dropBindingsLocked(func(b proto.Method) bool {
			switch b := b.(type) {
			case *proto.QueueBind:
				return b.Exchange == m.Exchange
			case *proto.ExchangeBind:
				return b.Source == m.Exchange || b.Destination == m.Exchange
			}
			return false
		})
		r.mu.Unlock()
	case *proto.QueueDeclare:
		ok, _ := reply.(*proto.QueueDeclareOk)
		if m.Passive || ok == nil || ok.Queue == "" {
			return
		}
		r.mu.Lock()
		if m.Queue == "" {
			r.serverNamed[ok.Queue] = true
		}
		if m.Queue == "" || !brokerOwned(m.Queue) {
			decl := *m
			decl.Queue = ok.Queue
			r.queues[ok.Queue] = recorded[proto.QueueDeclare]{r.seqOf(r.queues[ok.Queue].seq), decl}
		}
		r.mu.Unlock()
	case *proto.QueueDelete:
		r.mu.Lock()
		r.forgetQueueLocked(m.Queue)
		r.mu.Unlock()
	case *proto.QueueBind:
		b := *m
		r.addBinding(&b)
	case *proto.ExchangeBind:
		b := *m
		r.addBinding(&b)
	case *proto.QueueUnbind:
		r.mu.Lock()
		delete(r.bindings, bindingKey(&proto.QueueBind{Queue: m.Queue, Exchange: m.Exchange, RoutingKey: m.RoutingKey, Arguments: m.Arguments}))
		r.mu.Unlock()
	case *proto.ExchangeUnbind:
		r.mu.Lock()
		delete(r.bindings, bindingKey(&proto.ExchangeBind{Destination: m.Destination, Source: m.Source, RoutingKey: m.RoutingKey, Arguments: m.Arguments}))
		r.mu.Unlock()
	}
}

// addBinding records b (a private copy of a *proto.QueueBind or
// *proto.ExchangeBind), keeping its place if it was recorded before.
func (r *Record) addBinding(b proto.Method) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := bindingKey(b)
	r.bindings[k] = recorded[proto.Method]{r.seqOf(r.bindings[k].seq), b}
}

// seqOf keeps an entity's place when it is declared again.
func (r *Record) seqOf(old uint64) uint64 {
	if old != 0 {
		return old
	}
	r.seq++
	return r.seq
}

// brokerOwned: names the broker reserves (amq.*) and the default
// exchange; declaring them is refused or pointless.
func brokerOwned(name string) bool { return name == "" || strings.HasPrefix(name, "amq.") }

func bindingKey(m proto.Method) string {
	switch b := m.(type) {
	case *proto.QueueBind:
		return fmt.Sprintf("q\x00%s\x00%s\x00%s\x00%v", b.Queue, b.Exchange, b.RoutingKey, b.Arguments)
	case *proto.ExchangeBind:
		return fmt.Sprintf("e\x00%s\x00%s\x00%s\x00%v", b.Destination, b.Source, b.RoutingKey, b.Arguments)
	}
	return ""
}

func (r *Record) forgetQueueLocked(queue string) {
	delete(r.queues, queue)
	delete(r.serverNamed, queue)
	r.dropBindingsLocked(func(b proto.Method) bool {
		qb, ok := b.(*proto.QueueBind)
		return ok && qb.Queue == queue
	})
}

func (r *Record) dropBindingsLocked(match func(proto.Method) bool) {
	for k, b := range r.bindings {
		if match(b.m) {
			delete(r.bindings, k)
		}
	}
}

// LastConsumerGone forgets an auto-delete queue whose last consumer the
// user cancelled: the broker deletes it.
func (r *Record) LastConsumerGone(queue string) {
	r.mu.Lock()
	if q, ok := r.queues[queue]; ok && q.m.AutoDelete {
		r.forgetQueueLocked(queue)
	}
	r.mu.Unlock()
}

// rename moves a server-named queue to the name the broker gave it on a
// new connection, with its bindings.
func (r *Record) rename(old, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q, ok := r.queues[old]
	if !ok {
		return
	}
	delete(r.queues, old)
	delete(r.serverNamed, old)
	q.m.Queue = name
	r.queues[name] = q
	r.serverNamed[name] = true
	for k, b := range r.bindings {
		if qb, ok := b.m.(*proto.QueueBind); ok && qb.Queue == old {
			nb := *qb
			nb.Queue = name
			delete(r.bindings, k)
			r.bindings[bindingKey(&nb)] = recorded[proto.Method]{b.seq, &nb}
		}
	}
}

// item is one recorded declaration to send on a new connection.
type item struct {
	m           proto.Method
	serverNamed string // a server-named queue: its old name (the declare sends "")
}

// declarations returns the exchanges, then the queues, in the order they
// were first declared, that the filter lets through.
func (r *Record) declarations() []item {
	if r.off {
		return nil
	}
	r.mu.Lock()
	exs := sortedBySeq(r.exchanges)
	qs := sortedBySeq(r.queues)
	named := make(map[string]bool, len(r.serverNamed))
	for k := range r.serverNamed {
		named[k] = true
	}
	r.mu.Unlock()
	var items []item
	for _, e := range exs {
		if r.allows(ops.ExchangeDeclare{Exchange: e.Exchange, Kind: ops.ExchangeKind(e.Type), Durable: e.Durable,
			AutoDelete: e.AutoDelete, Internal: e.Internal, Args: e.Arguments}) {
			m := e
			items = append(items, item{m: &m})
		}
	}
	for _, q := range qs {
		if !r.allows(ops.QueueDeclare{Queue: q.Queue, Durable: q.Durable, Exclusive: q.Exclusive, AutoDelete: q.AutoDelete, Args: q.Arguments}) {
			continue
		}
		m := q
		item := item{m: &m}
		if named[q.Queue] {
			item.serverNamed = q.Queue
			m.Queue = ""
		}
		items = append(items, item)
	}
	return items
}

// bindingsToReplay returns the recorded bindings in the order they were
// made, that the filter lets through.
func (r *Record) bindingsToReplay() []item {
	if r.off {
		return nil
	}
	r.mu.Lock()
	bs := sortedBySeq(r.bindings)
	r.mu.Unlock()
	var items []item
	for _, b := range bs {
		var entity any
		switch b := b.(type) {
		case *proto.QueueBind:
			entity = ops.QueueBind{Queue: b.Queue, Exchange: b.Exchange, RoutingKey: b.RoutingKey, Args: b.Arguments}
		case *proto.ExchangeBind:
			entity = ops.ExchangeBind{Destination: b.Destination, Source: b.Source, RoutingKey: b.RoutingKey, Args: b.Arguments}
		}
		if r.allows(entity) {
			items = append(items, item{m: b})
		}
	}
	return items
}

func (r *Record) allows(entity any) bool { return r.filter == nil || r.filter(entity) }

func sortedBySeq[T any](m map[string]recorded[T]) []T {
	list := make([]recorded[T], 0, len(m))
	for _, v := range m {
		list = append(list, v)
	}
	slices.SortFunc(list, func(a, b recorded[T]) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]T, len(list))
	for i, v := range list {
		out[i] = v.m
	}
	return out
}
