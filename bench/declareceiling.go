package main

import (
	"context"
	"fmt"

	"github.com/leveret-mq/leveret/internal/proto"
)

// rawDeclares is the declare scenario's ceiling: the raw codec client
// writes every queue.declare with no-wait, spread over `channels`
// channels, in one write, then a passive declare per channel (answered
// only once that channel's no-wait declares are done) and waits for those.
// No client waits less: what it measures is how fast the broker creates
// queues over one connection.
func rawDeclares(ctx context.Context, e *env, url string, channels int) (cost, error) {
	r, err := rawDial(ctx, url)
	if err != nil {
		return cost{}, err
	}
	defer r.close()
	for ch := uint16(2); ch <= uint16(channels); ch++ { // channel 1 is open
		r.send(ch, &proto.ChannelOpen{})
	}
	if err := r.flush(); err != nil {
		return cost{}, err
	}
	for range channels - 1 {
		if _, err := r.expect(proto.ChannelOpenOkID); err != nil {
			return cost{}, err
		}
	}
	names := make([]string, e.cfg.declares)
	for i := range names {
		names[i] = e.name("decl")
	}
	m, err := measure(func() error {
		for i, q := range names {
			r.send(uint16(1+i%channels), &proto.QueueDeclare{Queue: q, Durable: true, NoWait: true})
		}
		for ch := range min(channels, len(names)) {
			last := ch + (len(names)-1-ch)/channels*channels // the last index sent on channel ch+1
			r.send(uint16(1+ch), &proto.QueueDeclare{Queue: names[last], Passive: true})
		}
		if err := r.flush(); err != nil {
			return err
		}
		for range min(channels, len(names)) {
			m, err := r.readMethod()
			if err != nil {
				return err
			}
			if _, ok := m.(*proto.QueueDeclareOk); !ok {
				return fmt.Errorf("expected queue.declare-ok, got %v", m.ID())
			}
		}
		return nil
	})
	if derr := e.deleteQueues(ctx, names...); err == nil {
		err = derr
	}
	return m, err
}
