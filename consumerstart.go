package leveret

import (
	"errors"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Starting a consumer, and starting it again after a reconnect, ends in
// one of four ways, the same for both kinds of consumer (one started with
// Client.Consume on a channel of its own, one on an explicit Channel):
//
//   - the broker confirms it (consume-ok): it runs; ran is set for good;
//   - the connection drops under the start, and the client reconnects:
//     nothing ends; the next connection starts it again (the registry restarts
//     a Client.Consume consumer, a re-opened Channel its consumers);
//   - the broker refuses the restart of a Client.Consume consumer that ran
//     before (its queue is gone, say): it is tried again on the registry's
//     timers until it works (consumerretry.go), and does not end;
//   - anything else ends it with the error: the client ends, a first start
//     is refused, or a re-opened explicit channel's consumer is refused
//     (the broker closed that channel: it ends with it).
//
// A Client.Consume consumer whose own channel ends while it runs (the
// connection drops, or the broker closes the channel) takes the same path:
// it runs again on another channel. It ends only when the user cancels it,
// the broker cancels it, or the client closes.

// startFailed applies those rules to a start, or restart, of cs that
// failed with err, or to the end of a Client.Consume consumer's channel.
// It never blocks and takes no lock the caller may hold, except that
// ending cs takes its channel's mu: callers must not hold it.
func (cs *Consumer) startFailed(err error) {
	r := cs.c.reg
	switch {
	case !r.reconnects() || errors.Is(err, ErrClosed):
		cs.end(err) // the client, or this channel, was closed
	case !cs.ran.Load() && !cs.own:
		cs.end(err) // Channel.Consume failed: its promise says so
	case connLost(err):
		// Started again on the next connection.
	case cs.own && cs.ran.Load():
		r.retryConsumer(cs, err)
	default:
		cs.end(err)
	}
}

// startRequests are the requests that start or restart cs with o, on
// any channel: basic.qos for the consumer's own prefetch (nil without one)
// and basic.consume, with the consumer's tag (consume-ok is matched by
// it). The consume's outcome goes to startFailed, or marks cs as having
// run, and then to done if set. Both kinds of consumer start this way,
// first and after a reconnect (Channel.startConsumer, Channel.reopen). The
// completion runs on the reader with no lock held.
func (cs *Consumer) startRequests(o ops.Consume, done func(error)) (qos, consume *mux.Request) {
	if o.Prefetch > 0 {
		qos = &mux.Request{Method: &proto.BasicQos{PrefetchCount: o.Prefetch}, Done: func(proto.Method, *ops.Message, error) {}}
	}
	consume = &mux.Request{
		Method: &proto.BasicConsume{Queue: o.Queue, ConsumerTag: cs.tag, NoLocal: o.NoLocal, NoAck: o.NoAck, Exclusive: o.Exclusive, Arguments: o.Args},
		Tag:    cs.tag,
		Done: func(_ proto.Method, _ *ops.Message, err error) {
			if err != nil {
				cs.startFailed(err)
			} else {
				cs.ran.Store(true)
			}
			if done != nil {
				done(err)
			}
		}}
	return qos, consume
}

// startOwn starts cs on a fresh channel of the current connection, unless
// it already runs there, has ended, or no connection is ready (then the
// supervisor starts it once one is). It returns the broker's answer, or
// nil if it sent nothing. It never blocks. A failure is startFailed's;
// a consumer whose first start ends it fails Client.Consume's promise.
func (r *registry) startOwn(cs *Consumer) *Promise[struct{}] {
	r.mu.Lock()
	g := r.current()
	_, registered := r.consumers[cs]
	if !registered || g == nil || cs.onGen == g {
		r.mu.Unlock()
		return nil
	}
	cs.onGen = g
	o := cs.restartOptions(cs.o)
	r.mu.Unlock()
	answer := newPromise[struct{}]()
	settle := func(err error) {
		if err == nil {
			r.mu.Lock()
			cs.retries = 0
			r.mu.Unlock()
			cs.started.resolve(cs, nil)
		} else if cs.Err() != nil {
			cs.started.resolve(nil, cs.Err())
		}
		answer.resolve(struct{}{}, err)
	}
	ch, err := r.c.openChannel(g, nil)
	if err != nil {
		cs.startFailed(err)
		settle(err)
		return answer
	}
	ch.startConsumer(cs, o, settle)
	return answer
}
