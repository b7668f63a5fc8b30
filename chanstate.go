package leveret

import (
	"context"
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
)

// A Channel's life is one state machine, guarded by Channel.mu; this file
// holds every transition. A pooled channel (recovers false) knows only
// open and ended.
//
//	open ──the connection is lost and the client reconnects──▶ suspended
//	suspended ──re-opened on the next connection (reopen)──▶ open
//	open, suspended ──channel error, Close, the client ends, a re-open
//	                  refused──▶ ended (for good)
//
// Nothing polls: Publish and Send waiting while the channel is suspended
// wait on up, which the re-open or the end closes; a link that has ended
// before the reader reported it is waited for on mux.Channel.Ended.
type chanState uint8

const (
	chanOpen      chanState = iota // running on its current link
	chanSuspended                  // its connection was lost; re-opened on the next one
	chanEnded                      // for good: Err says why
)

// closed is told that link l ended (see mux.Handler); it runs on the
// reader goroutine. l may not be the Channel's link yet: a re-open the
// broker refuses ends the Channel with the refusal.
func (ch *Channel) closed(l *link, err error) {
	lost := l.lost()
	if lost {
		ch.dropStaleDeliveries()
	}
	if ch.recovers && lost {
		ch.suspend(err) // re-opened on the next connection (reopen)
		return
	}
	ch.end(err)
}

// end ends the channel for good with err.
func (ch *Channel) end(err error) {
	if ch.recovers {
		ch.c.reg.forgetChannel(ch)
	}
	ch.endOnce.Do(func() {
		ch.endErr = err
		close(ch.done)
	})
	// The client reconnects: deliveries of this channel are stale. A
	// Client.Consume consumer's fate is startFailed's (it runs again on
	// another channel unless the client ends); an explicit channel's
	// consumers end with it.
	reconnects := ch.connectionLost()
	ch.mu.Lock()
	consumers := make([]*Consumer, 0, len(ch.consumers))
	var own []*Consumer
	for tag, cs := range ch.consumers {
		delete(ch.consumers, tag)
		if cs.own {
			own = append(own, cs)
			continue
		}
		consumers = append(consumers, cs)
	}
	// Stale too when a Client.Consume consumer moves on: its channel's
	// deliveries went back to the queue (or restartCancelled set it).
	ch.stale = ch.stale || reconnects || (len(own) > 0 && ch.c.reg.reconnects())
	ch.unacked.clear()
	ch.txAcked = nil
	ch.state = chanEnded
	ch.closeWhenSettled = false
	ch.notifySettledLocked()
	onClose := ch.onClose
	if ch.up != nil { // suspended: Publish and Send waiting for the next connection see the end
		close(ch.up)
		ch.up = nil
	}
	ch.mu.Unlock()
	if onClose != nil {
		ch.c.dispatch.postBatched(func() { onClose(err) })
	}
	for _, cs := range consumers {
		cs.end(err)
	}
	for _, cs := range own {
		cs.startFailed(err)
	}
}

// suspend is closed's path for a dropped connection the client will
// replace. It runs on the old connection's reader.
func (ch *Channel) suspend(err error) {
	ch.mu.Lock()
	if ch.state == chanEnded {
		ch.mu.Unlock()
		return
	}
	ch.state = chanSuspended
	ch.lost = err
	if ch.up == nil {
		ch.up = make(chan struct{})
	}
	// Lost only if the transaction open at the drop had done something:
	// one committed (or rolled back) just before it lost nothing.
	if ch.tx && (ch.txPublished.Load() || len(ch.txAcked) > 0) {
		ch.txLost = err
	}
	ch.txPublished.Store(false)
	ch.unacked.clear()
	ch.txAcked = nil
	ch.notifySettledLocked()
	ch.mu.Unlock()
}

// endIfSuspended ends a suspended channel for good (Close while it waits
// for a connection) and reports whether it was suspended.
func (ch *Channel) endIfSuspended() bool {
	suspended := ch.suspended()
	if suspended {
		ch.end(fmt.Errorf("amqp: channel closed by this client (Close) while reconnecting: %w", ErrClosed))
	}
	return suspended
}

// resumeLocked makes l, just re-opened with the channel's set-up, its
// link: the channel is open again and what waited for it goes on. If l's
// connection dropped already, the channel stays suspended for the next one
// and the drop's error is returned. It returns what OnReopen is told.
// Callers hold ch.mu.
func (ch *Channel) resumeLocked(l *link) (lost error, onReopen func(error, uint64), err error) {
	ch.cur.Store(l)
	lost, onReopen = ch.lost, ch.onReopen
	if err := l.mc.Err(); err != nil {
		// g dropped already, and the new link's end found the old link in
		// place: it stays suspended for the next connection.
		return nil, nil, err
	}
	ch.state = chanOpen
	ch.lost = nil
	if ch.up != nil {
		close(ch.up)
		ch.up = nil
	}
	return lost, onReopen, nil
}

// suspended reports whether ch waits for the next connection.
func (ch *Channel) suspended() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.state == chanSuspended
}

// live returns the AMQP channel to publish on, waiting under ctx while the
// channel is suspended; for a channel that has ended, the error it ended
// with.
func (ch *Channel) live(ctx context.Context) (*mux.Channel, error) {
	for {
		mc := ch.mux()
		if mc.Err() == nil || !ch.recovers {
			return mc, nil
		}
		ch.mu.Lock()
		up, ended, endErr := ch.up, ch.state == chanEnded, ch.endErr
		ch.mu.Unlock()
		switch {
		case ended:
			return nil, endErr
		case up == nil:
			// The link ended and the reader has not told the channel yet:
			// wait until it has (then up is set, or the channel ended).
			if !ch.c.reg.reconnects() {
				return mc, nil
			}
			select {
			case <-mc.Ended():
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
