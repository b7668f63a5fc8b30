package leveret

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// An explicit Channel (Client.Channel) survives a dropped connection: it
// is suspended when the connection drops (operations pending then fail
// with the connection's error, as the broker discarded them) and re-opened
// on the next connection with what it had set up: its prefetch (basic.qos),
// confirm mode, transaction mode, and its consumers (same tags, same
// Deliveries channels). Each AMQP channel underneath is single-use (a
// link); the Channel swaps to a fresh one.

// ErrTransactionLost is the error of a TxCommit after the connection
// dropped in the middle of the transaction: what it published and acked was
// discarded by the broker. The channel is back in transaction mode; the
// next transaction works.
var ErrTransactionLost = errors.New("amqp: transaction lost with the connection")

// recovery is a Channel's state for re-opening. Guarded by Channel.mu
// except where noted.
type recovery struct {
	recovers bool          // set at open: an explicit channel
	lost     error         // while suspended: the lost connection's error
	up       chan struct{} // while suspended: closed when re-opened or ended (chanstate.go)
	qos      [2]*ops.Qos   // the last basic.qos per Global flag, re-applied
	txLost   error         // the connection dropped inside a transaction that had done something
	// txMode mirrors tx for the publish path, which takes no lock;
	// txPublished: a publish since the last commit or rollback.
	txMode, txPublished atomic.Bool
	onReopen            func(lost error, lastTag uint64)
	// Confirm mode: re-selected on every re-open; confirmation tags keep
	// counting across re-opens (link.base, see OnReopen).
	confirming atomic.Bool
}

// OnReopen sets a handler called after the channel was re-opened on a new
// connection, with the lost connection's error. In confirm mode lastTag is
// the number of the last publish sent before the drop: publishes numbered
// up to it that were not confirmed never will be (the broker discarded
// them or they are in doubt), and confirmation tags go on counting from
// lastTag+1 on the new connection, so numbering never drifts (a Multiple
// confirmation there covers tags down to lastTag+1). It runs on the
// dispatcher goroutine like OnClose, before any confirmation from the new
// connection.
func (ch *Channel) OnReopen(fn func(lost error, lastTag uint64)) {
	ch.mu.Lock()
	ch.onReopen = fn
	ch.mu.Unlock()
}

// reopen opens ch again on g and re-applies its set-up, then swaps it in.
// It runs on the supervisor. It returns the answers to wait for (each
// set-up step's and consumer's) and an error if the channel could not be
// re-opened.
func (ch *Channel) reopen(g *generation) ([]reopenStep, error) {
	// The old link's AMQP channel has ended with its connection, so its
	// count of publishes is final: a publish still returning from it is
	// counted, one it refused is not (a count kept up here, after Publish
	// returns, could miss a publish that was written just before the drop
	// and shift every later confirmation onto the wrong message).
	old := ch.cur.Load()
	lastTag := old.base + old.mc.PublishTags()
	l := ch.newLink(g, lastTag)
	mc := l.mc
	if err := mc.Open(nil); err != nil {
		if !connLost(err) {
			ch.end(err)
		}
		return nil, err
	}
	var steps []reopenStep
	call := func(what string, consumer bool, r *mux.Request) bool {
		answer := newPromise[struct{}]()
		steps = append(steps, reopenStep{what, consumer, answer})
		done := r.Done
		r.Done = func(reply proto.Method, msg *ops.Message, err error) {
			if done != nil {
				done(reply, msg, err)
			}
			answer.resolve(struct{}{}, err)
		}
		if err := mc.Call(r); err != nil {
			// The new link has ended already (its end, on the reader,
			// suspends or ends the channel and so its consumers): nothing
			// more can go out on it.
			answer.resolve(struct{}{}, err)
			return false
		}
		return true
	}
	ch.mu.Lock()
	if ch.state == chanEnded {
		ch.mu.Unlock()
		mc.Close(func(error) {})
		return nil, ch.endErr
	}
	// A refused set-up step closes the channel: its end reports it.
	ok := true
	for _, q := range ch.qos {
		if q != nil && ok {
			ok = call("re-applying basic.qos", false, &mux.Request{Method: &proto.BasicQos{PrefetchCount: q.PrefetchCount, PrefetchSize: q.PrefetchSize, Global: q.Global}})
		}
	}
	if ch.confirming.Load() && ok {
		ok = call("re-selecting confirm mode", false, &mux.Request{Method: &proto.ConfirmSelect{}})
	}
	if ch.tx && ok {
		ok = call("re-selecting transaction mode", false, &mux.Request{Method: &proto.TxSelect{}})
	}
	for _, cs := range ch.consumers {
		if !ok {
			break
		}
		// A refusal by the broker ends the consumer; a restart the
		// connection's drop cut short does not: the channel is suspended
		// with its consumers, and the next connection restarts them
		// (startFailed, from the reader, without ch.mu; ending cs here,
		// under ch.mu, would deadlock, as Consumer.end takes ch.mu).
		qos, consume := cs.startRequests(cs.restartOptions(cs.o), nil)
		if qos != nil {
			if ok = call("re-applying a consumer's prefetch", false, qos); !ok {
				break
			}
		}
		ok = call(fmt.Sprintf("restarting consumer %q", cs.tag), true, consume)
	}
	lost, fn, err := ch.resumeLocked(l)
	ch.mu.Unlock()
	if err != nil {
		return steps, err
	}
	if fn != nil {
		ch.c.dispatch.post(func() { fn(lost, lastTag) })
	}
	return steps, nil
}

// reopenStep is one answer a re-opened channel waits for: a set-up step
// (qos, confirm or tx mode) or a consumer's restart.
type reopenStep struct {
	what     string
	consumer bool
	answer   *Promise[struct{}]
}

// addChannel registers an explicit channel for re-opening.
func (r *registry) addChannel(ch *Channel) {
	r.mu.Lock()
	r.channels[ch] = struct{}{}
	r.mu.Unlock()
}

func (r *registry) forgetChannel(ch *Channel) {
	r.mu.Lock()
	delete(r.channels, ch)
	r.mu.Unlock()
}

// recoverChannels re-opens every suspended explicit channel on g and adds
// the outcome to rep. It runs on the supervisor, after the topology.
func (c *Client) recoverChannels(g *generation, rep *Recovery) {
	r := c.reg
	r.mu.Lock()
	list := make([]*Channel, 0, len(r.channels))
	for ch := range r.channels {
		list = append(list, ch)
	}
	r.mu.Unlock()
	var steps []reopenStep
	for _, ch := range list {
		if !ch.suspended() {
			continue
		}
		a, err := ch.reopen(g)
		if err != nil {
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: re-opening a channel: %w", err))
			continue
		}
		rep.Channels++
		steps = append(steps, a...)
	}
	// Recovered is reported only once every step was answered: a step the
	// connection's drop cut short is not done, and the supervisor sees the
	// drop.
	for _, s := range steps {
		if _, err := waitRecovery(c, s.answer); err != nil {
			rep.Failed = append(rep.Failed, fmt.Errorf("amqp: %s on a re-opened channel: %w", s.what, err))
			continue
		}
		if s.consumer {
			rep.Consumers++
		}
	}
}

// endSuspended ends the explicit channels still waiting for a connection,
// when the client ends.
func (r *registry) endSuspended(err error) {
	r.mu.Lock()
	list := make([]*Channel, 0, len(r.channels))
	for ch := range r.channels {
		list = append(list, ch)
	}
	r.mu.Unlock()
	for _, ch := range list {
		if ch.suspended() {
			ch.end(err)
		}
	}
}
