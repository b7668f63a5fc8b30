package topology

import (
	"context"
	"fmt"
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/ops"
)

// Outcome is what an answer's error means to a replay. The errors are the
// owner's (mux.Config.FaultError makes them), so the owner classifies them.
type Outcome int

const (
	// Refused: the broker refused the item (a channel error, say).
	Refused Outcome = iota
	// Discarded: the broker discarded the item behind another failure on
	// its channel; it is sent again on a fresh channel.
	Discarded
	// Lost: the connection ended under the item.
	Lost
	// Locked: 405 RESOURCE_LOCKED, which a named exclusive queue meets
	// while the broker still holds the lost connection's.
	Locked
)

// Classify tells a replay what an error means.
type Classify func(error) Outcome

// Report is what a replay did.
type Report struct {
	Exchanges, Queues, Bindings int
	// Renamed maps each server-named queue's old name to its new one.
	Renamed map[string]string
	// Failed holds one error per item that was not re-declared.
	Failed []error
	// Refused holds one error per item the broker closed the connection
	// over: it left the record and is not replayed again.
	Refused []error
}

// The broker can refuse a replayed item for a moment while it settles
// after the drop; such an item is tried again every LockedRetryEvery, at
// most LockedRetries times (10 s). Named exclusive queues of the lost
// connection may still exist (until the broker notices that connection's
// end), so re-declaring one can meet 405 RESOURCE_LOCKED.
const (
	LockedRetryEvery = 250 * time.Millisecond
	LockedRetries    = 40
)

// Replay re-declares the record on conn, before anything else goes there:
// exchanges and queues first (server-named queues are declared
// server-named and renamed in the record), then the bindings, which may
// name the new names. One item failing is reported and the rest go on.
// Every wait ends with ctx (the client's Close). It blocks until every item was answered or the
// connection ended; the caller checks conn.Err afterwards.
func (r *Record) Replay(ctx context.Context, conn *mux.Conn, classify Classify) Report {
	rp := &replayer{rec: r, conn: conn, classify: classify, ctx: ctx}
	rep := Report{Renamed: make(map[string]string)}
	decls := r.declarations()
	replies, errs := rp.isolating(decls)
	rp.retryLocked(decls, replies, errs)
	for i, it := range decls {
		if errs[i] != nil {
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering %s: %w", Describe(it.m), errs[i]))
			continue
		}
		switch it.m.(type) {
		case *proto.ExchangeDeclare:
			rep.Exchanges++
		case *proto.QueueDeclare:
			rep.Queues++
			if ok, _ := replies[i].(*proto.QueueDeclareOk); it.serverNamed != "" && ok != nil {
				rep.Renamed[it.serverNamed] = ok.Queue
				r.rename(it.serverNamed, ok.Queue)
			}
		}
	}
	binds := r.bindingsToReplay()
	_, errs = rp.isolating(binds)
	for i, it := range binds {
		if errs[i] != nil {
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: recovering %s: %w", Describe(it.m), errs[i]))
			continue
		}
		rep.Bindings++
	}
	rep.Refused = rp.refused
	return rep
}

// replayer is one replay on one connection.
type replayer struct {
	rec      *Record
	conn     *mux.Conn
	classify Classify
	ctx      context.Context
	refused  []error
}

// isolating replays items: those not suspected pipelined, then each
// suspect alone. It applies what a close during it blamed: a culprit
// leaves the record (reported in Report.Refused), suspects are marked for
// the next replay, and a suspect answered is cleared.
func (rp *replayer) isolating(items []item) ([]proto.Method, []error) {
	var plain, suspects []int
	for i, it := range items {
		if rp.rec.suspected(it) {
			suspects = append(suspects, i)
		} else {
			plain = append(plain, i)
		}
	}
	replies := make([]proto.Method, len(items))
	errs := make([]error, len(items))
	run := func(idx []int) {
		for k, blame := range rp.at(items, idx, replies, errs) {
			rp.applyBlame(items[idx[k]], blame, errs[idx[k]])
		}
	}
	run(plain)
	for _, i := range suspects {
		if err := rp.conn.Err(); err != nil {
			errs[i] = err
			continue
		}
		run([]int{i})
	}
	return replies, errs
}

// applyBlame updates the record from one replayed item's outcome.
func (rp *replayer) applyBlame(it item, blame mux.Blame, err error) {
	switch {
	case err == nil:
		rp.rec.setSuspect(it, false)
	case rp.classify(err) != Lost:
	case blame == mux.Culprit || blame == mux.Suspect && rp.rec.suspected(it):
		rp.rec.refused(it)
		rp.refused = append(rp.refused, fmt.Errorf("amqp: recovering %s: the broker closed the connection over it; it is no longer re-declared: %w", Describe(it.m), err))
	case blame == mux.Suspect:
		rp.rec.setSuspect(it, true)
	}
}

// retryLocked replays again, every LockedRetryEvery, the exclusive queues
// refused with 405.
func (rp *replayer) retryLocked(items []item, replies []proto.Method, errs []error) {
	for try := 0; try < LockedRetries; try++ {
		var idx []int
		for i, err := range errs {
			if q, ok := items[i].m.(*proto.QueueDeclare); ok && q.Exclusive && err != nil && rp.classify(err) == Locked {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 || session.Sleep(rp.ctx, LockedRetryEvery) != nil {
			return
		}
		rp.at(items, idx, replies, errs)
	}
}

// at replays the items at idx and puts each answer in replies and errs at
// its item's place; it returns what a close blamed each for, in idx's
// order.
func (rp *replayer) at(items []item, idx []int, replies []proto.Method, errs []error) []mux.Blame {
	batch := make([]item, len(idx))
	for k, i := range idx {
		batch[k] = items[i]
	}
	r, e, blames := rp.replay(batch)
	for k, i := range idx {
		replies[i], errs[i] = r[k], e[k]
	}
	return blames
}

// answer is one replayed item's outcome: the reply, or the error and what
// the connection's close blamed the item for.
type answer struct {
	m     proto.Method
	err   error
	blame mux.Blame
}

// replay sends items pipelined on a fresh channel and waits for every
// answer. When one fails, the broker closes the channel and discards those
// behind it: they are sent again on a fresh channel, so each item gets its
// own answer. Nothing here is recorded (the record already holds it).
func (rp *replayer) replay(items []item) ([]proto.Method, []error, []mux.Blame) {
	replies := make([]proto.Method, len(items))
	errs := make([]error, len(items))
	blames := make([]mux.Blame, len(items))
	todo := make([]int, len(items))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		mc := rp.conn.NewChannel(ignore{})
		if err := mc.Open(nil); err != nil {
			for _, i := range todo {
				errs[i] = err
			}
			break
		}
		// Buffered for every answer: Done runs on the reader and never
		// waits for this goroutine.
		answers := make([]chan answer, len(todo))
		for k, i := range todo {
			a := make(chan answer, 1)
			answers[k] = a
			r := &mux.Request{Method: items[i].m}
			r.Done = func(reply proto.Method, _ *ops.Message, err error) { a <- answer{reply, err, r.Blame} }
			if err := mc.Call(r); err != nil {
				a <- answer{err: err}
			}
		}
		var next []int
		for k, i := range todo {
			a := rp.wait(answers[k])
			if a.err != nil && rp.classify(a.err) == Discarded {
				next = append(next, i) // discarded behind a failure
				continue
			}
			replies[i], errs[i], blames[i] = a.m, a.err, a.blame
		}
		if mc.Err() == nil {
			mc.Close(func(error) {})
		}
		if len(next) == len(todo) { // no answer at all: do not loop
			for _, i := range next {
				errs[i] = fmt.Errorf("amqp: recovery made no progress: %w", mc.Err())
			}
			break
		}
		todo = next
	}
	return replies, errs, blames
}

// AnswerWait bounds the wait for one answer. A connection that stops
// answering is caught by its heartbeat first.
const AnswerWait = time.Minute

// wait waits for one answer, until ctx ends or AnswerWait passes.
func (rp *replayer) wait(a <-chan answer) answer {
	t := time.NewTimer(AnswerWait)
	defer t.Stop()
	select {
	case got := <-a:
		return got
	case <-t.C:
		return answer{err: fmt.Errorf("amqp: recovery step took longer than %v: %w", AnswerWait, context.DeadlineExceeded)}
	case <-rp.ctx.Done():
		return answer{err: fmt.Errorf("amqp: recovery step: %w", context.Cause(rp.ctx))}
	}
}

// ignore is the mux.Handler of a replay's channels: nothing asynchronous
// is expected on them, and their end is seen in each answer.
type ignore struct{}

func (ignore) Async(proto.Method, *ops.Message) {}
func (ignore) Closed(error)                     {}
func (ignore) Oversized(proto.Method, uint64)   {}

// Describe names a recorded entity for a report.
func Describe(m proto.Method) string {
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
