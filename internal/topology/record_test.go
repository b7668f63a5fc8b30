package topology

import (
	"slices"
	"testing"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

func names(items []item) []string {
	var out []string
	for _, it := range items {
		out = append(out, Describe(it.m))
	}
	return out
}

// The record holds what the broker confirmed, in first-declared order, and
// forgets an entity with the bindings that name it when it is deleted.
func TestRecordFollowsRepliesAndDeletes(t *testing.T) {
	r := NewRecord(nil, false)
	r.Observe(&proto.ExchangeDeclare{Exchange: "ex", Type: "direct"}, &proto.ExchangeDeclareOk{})
	r.Observe(&proto.ExchangeDeclare{Exchange: "amq.direct", Type: "direct"}, &proto.ExchangeDeclareOk{})
	r.Observe(&proto.QueueDeclare{Queue: "q1"}, &proto.QueueDeclareOk{Queue: "q1"})
	r.Observe(&proto.QueueDeclare{Queue: "q2", Passive: true}, &proto.QueueDeclareOk{Queue: "q2"})
	r.Observe(&proto.QueueDeclare{}, &proto.QueueDeclareOk{Queue: "amq.gen-1"})
	r.Observe(&proto.QueueBind{Queue: "q1", Exchange: "ex", RoutingKey: "a"}, &proto.QueueBindOk{})
	r.Observe(&proto.QueueBind{Queue: "amq.gen-1", Exchange: "ex", RoutingKey: "b"}, &proto.QueueBindOk{})
	r.Observe(&proto.QueueBind{Queue: "q1", Exchange: "ex", RoutingKey: "a"}, &proto.QueueBindOk{}) // again: one binding

	decls := r.declarations()
	if got, want := names(decls), []string{`exchange "ex"`, `queue "q1"`, "server-named queue"}; !slices.Equal(got, want) {
		t.Fatalf("declarations %q, want %q", got, want)
	}
	if decls[2].serverNamed != "amq.gen-1" {
		t.Fatalf("server-named queue's old name %q", decls[2].serverNamed)
	}
	if n := len(r.bindingsToReplay()); n != 2 {
		t.Fatalf("%d bindings, want 2", n)
	}

	r.rename("amq.gen-1", "amq.gen-2")
	bs := r.bindingsToReplay()
	if qb := bs[1].m.(*proto.QueueBind); qb.Queue != "amq.gen-2" {
		t.Fatalf("binding names %q after the rename", qb.Queue)
	}
	r.Observe(&proto.QueueUnbind{Queue: "q1", Exchange: "ex", RoutingKey: "a"}, &proto.QueueUnbindOk{})
	r.Observe(&proto.QueueDelete{Queue: "amq.gen-2"}, &proto.QueueDeleteOk{})
	if n := len(r.bindingsToReplay()); n != 0 {
		t.Fatalf("%d bindings left after unbind and delete", n)
	}
	r.Observe(&proto.ExchangeDelete{Exchange: "ex"}, &proto.ExchangeDeleteOk{})
	if got, want := names(r.declarations()), []string{`queue "q1"`}; !slices.Equal(got, want) {
		t.Fatalf("after deletes %q, want %q", got, want)
	}
}

// WithTopologyRecovery's filter sees ops values; nil turns replay off.
func TestRecordFilter(t *testing.T) {
	r := NewRecord(func(e any) bool {
		q, ok := e.(ops.QueueDeclare)
		return !ok || q.Durable
	}, false)
	r.Observe(&proto.QueueDeclare{Queue: "keep", Durable: true}, &proto.QueueDeclareOk{Queue: "keep"})
	r.Observe(&proto.QueueDeclare{Queue: "skip"}, &proto.QueueDeclareOk{Queue: "skip"})
	if got, want := names(r.declarations()), []string{`queue "keep"`}; !slices.Equal(got, want) {
		t.Fatalf("filtered %q, want %q", got, want)
	}
	off := NewRecord(nil, true)
	off.Observe(&proto.QueueDeclare{Queue: "q"}, &proto.QueueDeclareOk{Queue: "q"})
	if n := len(off.declarations()); n != 0 {
		t.Fatalf("recovery off still replays %d", n)
	}
}
