package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connect runs b on a fake connection and returns mux's side of it, closed
// when the test ends.
func connect(t *testing.T, b *fakeserver.Broker) *mux.Conn {
	t.Helper()
	nc, _ := fakeserver.Pipe(t, fakeserver.Options{}, b.Serve)
	c := mux.New(nc, proto.NewFrameReader(nc), mux.Config{FrameMax: 131072, ChannelMax: 2047})
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// classify reads mux's own errors, as the root reads its public ones.
func classify(err error) Outcome {
	var e *mux.Error
	switch {
	case errors.Is(err, mux.ErrNotExecuted):
		return Discarded
	case errors.As(err, &e) && e.Hard, errors.Is(err, mux.ErrClosed):
		return Lost
	case errors.As(err, &e) && e.Code == 405:
		return Locked
	}
	return Refused
}

// sent records the methods a broker read, by name.
type sent struct {
	mu  sync.Mutex
	ids []string
}

func (s *sent) before(_, _ int, _ uint16, m proto.Method) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m := m.(type) {
	case *proto.ExchangeDeclare:
		s.ids = append(s.ids, "x:"+m.Exchange)
	case *proto.QueueDeclare:
		s.ids = append(s.ids, "q:"+m.Queue)
	case *proto.QueueBind:
		s.ids = append(s.ids, "b:"+m.Queue+"<-"+m.Exchange)
	case *proto.ExchangeBind:
		s.ids = append(s.ids, "xb:"+m.Destination+"<-"+m.Source)
	}
	return false
}

func (s *sent) list() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.ids, " ")
}

func filled() *Record {
	r := NewRecord(nil, false)
	r.Observe(&proto.ExchangeDeclare{Exchange: "in", Type: "topic"}, &proto.ExchangeDeclareOk{})
	r.Observe(&proto.ExchangeDeclare{Exchange: "fan", Type: "fanout"}, &proto.ExchangeDeclareOk{})
	r.Observe(&proto.QueueDeclare{Queue: "work", Durable: true}, &proto.QueueDeclareOk{Queue: "work"})
	r.Observe(&proto.QueueDeclare{Exclusive: true}, &proto.QueueDeclareOk{Queue: "amq.gen-old"})
	r.Observe(&proto.QueueBind{Queue: "work", Exchange: "in", RoutingKey: "w.#"}, &proto.QueueBindOk{})
	r.Observe(&proto.QueueBind{Queue: "amq.gen-old", Exchange: "fan"}, &proto.QueueBindOk{})
	r.Observe(&proto.ExchangeBind{Destination: "fan", Source: "in"}, &proto.ExchangeBindOk{})
	return r
}

// A replay declares exchanges, then queues, then bindings, in recorded
// order; a server-named queue gets a new name, which its bindings follow.
func TestReplayInOrderFollowingRenames(t *testing.T) {
	var s sent
	b := &fakeserver.Broker{Before: s.before}
	r := filled()
	rep := r.Replay(context.Background(), connect(t, b), classify)
	if rep.Exchanges != 2 || rep.Queues != 2 || rep.Bindings != 3 || len(rep.Failed) != 0 || len(rep.Refused) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if got := rep.Renamed["amq.gen-old"]; got != "amq.gen-1" {
		t.Fatalf("renamed to %q", got)
	}
	want := "x:in x:fan q:work q: b:work<-in b:amq.gen-1<-fan xb:fan<-in"
	if got := s.list(); got != want {
		t.Fatalf("sent %s\nwant %s", got, want)
	}
	// The record follows the new name too.
	again := r.Replay(context.Background(), connect(t, &fakeserver.Broker{}), classify)
	if again.Renamed["amq.gen-1"] == "" {
		t.Fatalf("the second replay did not know the new name: %+v", again)
	}
}

// An item the broker refuses with a channel error fails alone: those
// pipelined behind it, which the broker discarded, are sent again and
// succeed; it stays recorded (its refusal may pass).
func TestReplayRefusedItemFailsAlone(t *testing.T) {
	b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
		if q, ok := m.(*proto.QueueDeclare); ok && q.Queue == "work" {
			return &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - inequivalent arg 'durable'", ClassID: 50, MethodID: 10}
		}
		return nil
	}}
	r := filled()
	rep := r.Replay(context.Background(), connect(t, b), classify)
	if rep.Exchanges != 2 || rep.Queues != 1 || rep.Bindings != 3 || len(rep.Failed) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(rep.Failed[0].Error(), `queue "work"`) {
		t.Fatalf("failure %v does not name the queue", rep.Failed[0])
	}
	if len(r.declarations()) != 4 {
		t.Fatal("a refused queue left the record")
	}
}

// A queue the broker closes the connection over (RabbitMQ 4.x refusing a
// transient non-exclusive queue: 541) leaves the record and is reported
// as refused; the next replay does not send it.
func TestReplayCulpritLeavesTheRecord(t *testing.T) {
	b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
		if q, ok := m.(*proto.QueueDeclare); ok && q.Queue == "work" {
			return &proto.ConnectionClose{ReplyCode: 541, ReplyText: "INTERNAL_ERROR - queue 'work' in vhost '/': transient non-exclusive queues are not allowed", ClassID: 50, MethodID: 10}
		}
		return nil
	}}
	r := filled()
	c := connect(t, b)
	rep := r.Replay(context.Background(), c, classify)
	if c.Err() == nil {
		t.Fatal("the connection survived")
	}
	if len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0].Error(), `queue "work"`) {
		t.Fatalf("refused %v", rep.Refused)
	}
	var s sent
	rep = r.Replay(context.Background(), connect(t, &fakeserver.Broker{Before: s.before}), classify)
	if strings.Contains(s.list(), "q:work") || len(rep.Failed) != 0 || rep.Bindings != 2 {
		t.Fatalf("the next replay sent %s; report %+v", s.list(), rep)
	}
}

// When a close blames several items, each becomes a suspect: the next
// replay sends the suspects one at a time after the rest, and the one the
// next close blames again is the culprit.
func TestReplaySuspectsIsolated(t *testing.T) {
	refuse := func(_ int, _ uint16, m proto.Method) proto.Method {
		if x, ok := m.(*proto.ExchangeDeclare); ok && x.Type == "x-delayed-message" {
			// No quoted name: every pending exchange.declare is a suspect.
			return &proto.ConnectionClose{ReplyCode: 503, ReplyText: "COMMAND_INVALID - unknown exchange type", ClassID: 40, MethodID: 10}
		}
		return nil
	}
	r := NewRecord(nil, false)
	for i := range 3 {
		r.Observe(&proto.ExchangeDeclare{Exchange: fmt.Sprint("ok", i), Type: "direct"}, &proto.ExchangeDeclareOk{})
	}
	r.Observe(&proto.ExchangeDeclare{Exchange: "delayed", Type: "x-delayed-message"}, &proto.ExchangeDeclareOk{})
	var closes int
	for try := 0; try < 4; try++ {
		c := connect(t, &fakeserver.Broker{Refuse: refuse})
		rep := r.Replay(context.Background(), c, classify)
		if c.Err() == nil {
			if rep.Exchanges != 3 {
				t.Fatalf("report %+v", rep)
			}
			break
		}
		closes++
		if len(rep.Refused) > 0 && !strings.Contains(rep.Refused[0].Error(), `exchange "delayed"`) {
			t.Fatalf("refused %v", rep.Refused)
		}
	}
	if closes > 2 {
		t.Fatalf("%d closed connections for one culprit; want at most 2", closes)
	}
	if len(r.declarations()) != 3 {
		t.Fatalf("the record holds %d exchanges; want the 3 the broker accepts", len(r.declarations()))
	}
}

// A named exclusive queue meets 405 while the broker still holds the lost
// connection's: it is declared again until the broker lets it go.
func TestReplayLockedQueueTriedAgain(t *testing.T) {
	var mu sync.Mutex
	refusals := 2
	b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
		mu.Lock()
		defer mu.Unlock()
		if q, ok := m.(*proto.QueueDeclare); ok && q.Queue == "mine" && refusals > 0 {
			refusals--
			return &proto.ChannelClose{ReplyCode: 405, ReplyText: "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'mine'", ClassID: 50, MethodID: 10}
		}
		return nil
	}}
	r := NewRecord(nil, false)
	r.Observe(&proto.QueueDeclare{Queue: "mine", Exclusive: true}, &proto.QueueDeclareOk{Queue: "mine"})
	rep := r.Replay(context.Background(), connect(t, b), classify)
	if rep.Queues != 1 || len(rep.Failed) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A replay whose ctx ends (the client's Close) stops waiting.
func TestReplayStopsWithItsContext(t *testing.T) {
	b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
		if _, ok := m.(*proto.QueueDeclare); ok {
			return &proto.ChannelClose{ReplyCode: 405, ReplyText: "RESOURCE_LOCKED", ClassID: 50, MethodID: 10}
		}
		return nil
	}}
	r := NewRecord(nil, false)
	r.Observe(&proto.QueueDeclare{Queue: "mine", Exclusive: true}, &proto.QueueDeclareOk{Queue: "mine"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep := r.Replay(ctx, connect(t, b), classify)
	if rep.Queues != 0 || len(rep.Failed) != 1 {
		t.Fatalf("report %+v", rep)
	}
}
