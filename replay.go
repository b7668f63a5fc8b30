package leveret

import (
	"errors"
	"fmt"
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// recoverOn re-declares the client's recorded topology on g, before any
// parked operation or consumer goes there: exchanges and queues first
// (server-named queues are declared server-named and renamed in the
// record), then the bindings, which may name the new names. One entity
// failing is reported and the rest go on. It runs on the supervisor.
func (c *Client) recoverOn(g *generation) *Recovery {
	rep := &Recovery{Renamed: make(map[string]string)}
	decls := c.rec.declarations()
	replies, errs := c.replayIsolating(g, decls)
	c.retryLocked(g, decls, replies, errs)
	for i, item := range decls {
		if errs[i] != nil {
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering %s: %w", describe(item.m), errs[i]))
			continue
		}
		switch item.m.(type) {
		case *proto.ExchangeDeclare:
			rep.Exchanges++
		case *proto.QueueDeclare:
			rep.Queues++
			if ok, _ := replies[i].(*proto.QueueDeclareOk); item.serverNamed != "" && ok != nil {
				rep.Renamed[item.serverNamed] = ok.Queue
				c.rec.rename(item.serverNamed, ok.Queue)
			}
		}
	}
	binds := c.rec.bindingsToReplay()
	_, errs = c.replayIsolating(g, binds)
	for i, item := range binds {
		if errs[i] != nil {
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering %s: %w", describe(item.m), errs[i]))
			continue
		}
		rep.Bindings++
	}
	return rep
}

// The broker can refuse a recovery step for a moment while it settles
// after the drop; such a step is tried again every refusedRetryEvery, at
// most refusedRetries times (10 s). Named exclusive queues of the lost
// connection may still exist (until the broker notices that connection's
// end), so re-declaring one can meet 405 RESOURCE_LOCKED; consumers meet
// 406 on a cluster (see recoverConsumers).
const (
	refusedRetryEvery = 250 * time.Millisecond
	refusedRetries    = 40
)

func (c *Client) retryLocked(g *generation, items []replayItem, replies []proto.Method, errs []error) {
	for try := 0; try < refusedRetries; try++ {
		var idx []int
		for i, err := range errs {
			if q, ok := items[i].m.(*proto.QueueDeclare); ok && q.Exclusive && errors.Is(err, ErrResourceLocked) {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 || sleepCtx(c.supCtx, refusedRetryEvery) != nil {
			return
		}
		c.replayAt(g, items, idx, replies, errs)
	}
}

// replayAt replays the items at idx and puts each answer in replies and
// errs at its item's place; it returns what a close blamed each for, in
// idx's order.
func (c *Client) replayAt(g *generation, items []replayItem, idx []int, replies []proto.Method, errs []error) []mux.Blame {
	batch := make([]replayItem, len(idx))
	for k, i := range idx {
		batch[k] = items[i]
	}
	r, e, blames := c.replay(g, batch)
	for k, i := range idx {
		replies[i], errs[i] = r[k], e[k]
	}
	return blames
}

// replay sends items pipelined on a channel of g and waits for every
// answer. When one fails, the broker closes the channel and discards those
// behind it: they are sent again on a fresh channel, so each item gets its
// own answer, and what the connection's close blamed it for, if it came.
// Nothing here is recorded (the record already holds it).
func (c *Client) replay(g *generation, items []replayItem) ([]proto.Method, []error, []mux.Blame) {
	replies := make([]proto.Method, len(items))
	errs := make([]error, len(items))
	blames := make([]mux.Blame, len(items))
	todo := make([]int, len(items))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		ch, err := c.openChannel(g, nil)
		if err != nil {
			for _, i := range todo {
				errs[i] = err
			}
			break
		}
		answers := make([]*Promise[blamedReply], len(todo))
		for k, i := range todo {
			answer := newPromise[blamedReply]()
			answers[k] = answer
			r := &mux.Request{Method: items[i].m}
			r.Done = func(reply proto.Method, _ *ops.Message, err error) {
				answer.resolve(blamedReply{reply, r.Blame}, err)
			}
			if err := ch.mux().Call(r); err != nil {
				answer.resolve(blamedReply{}, err)
			}
		}
		var next []int
		for k, i := range todo {
			reply, err := waitRecovery(c, answers[k])
			if err != nil && errors.Is(err, ErrNotExecuted) && !isConnectionError(err) {
				next = append(next, i) // discarded behind a failure
				continue
			}
			replies[i], errs[i], blames[i] = reply.m, err, reply.blame
		}
		if ch.mux().Err() == nil {
			ch.mux().Close(func(error) {})
		}
		if len(next) == len(todo) { // no answer at all: do not loop
			for _, i := range next {
				errs[i] = fmt.Errorf("amqp: recovery made no progress: %w", ch.mux().Err())
			}
			break
		}
		todo = next
	}
	return replies, errs, blames
}

// blamedReply is a replayed item's answer: the reply, or with the
// connection's error what its close blamed the item for.
type blamedReply struct {
	m     proto.Method
	blame mux.Blame
}

// describe names a recorded entity for a report.
func describe(m proto.Method) string {
	switch m := m.(type) {
	case *proto.ExchangeDeclare:
		return fmt.Sprintf("exchange %q", m.Exchange)
	case *proto.QueueDeclare:
		if m.Queue == "" {
			return "server-named queue"
		}
		return fmt.Sprintf("queue %q", m.Queue)
	case *proto.QueueBind:
		return fmt.Sprintf("binding of queue %q to exchange %q (key %q)", m.Queue, m.Exchange, m.RoutingKey)
	case *proto.ExchangeBind:
		return fmt.Sprintf("binding of exchange %q to exchange %q (key %q)", m.Destination, m.Source, m.RoutingKey)
	}
	return fmt.Sprint(m.ID())
}
