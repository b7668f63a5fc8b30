package main

import (
	"context"
	"fmt"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

// leveretConfirmPkg is the confirmed-publish scenario with leveret's
// confirm package: a Publisher with the window, one promise per publish,
// Flush at the end. Every outcome is checked: once publish i has returned,
// at most `window` publishes (i among them) are unsettled, so publish
// i-window has settled and its ring slot can be checked and reused.
func leveretConfirmPkg(ctx context.Context, e *env, l load) (cost, error) {
	c, closeC, err := dialLeveret(ctx, e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeC()
	q, err := e.declareQueue(ctx, "confirm")
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	pub, err := confirm.New(ctx, c, confirm.WithWindow(l.window))
	if err != nil {
		return cost{}, err
	}
	n := l.messages
	body := make([]byte, l.body)
	ring := make([]*leveret.Promise[confirm.Outcome], l.window)
	check := func(p *leveret.Promise[confirm.Outcome]) error {
		if p == nil {
			return nil
		}
		out, ok := p.Value()
		if !ok || !out.Acked() {
			return fmt.Errorf("publish not acked: %v %v", out, p.Err())
		}
		return nil
	}
	m, err := measure(func() error {
		for i := range n {
			p := pub.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}})
			slot := i % len(ring)
			old := ring[slot]
			ring[slot] = p
			if err := check(old); err != nil { // publish i holds a slot: i-window has settled
				return err
			}
		}
		if err := pub.Flush(ctx); err != nil {
			return err
		}
		for _, p := range ring {
			if err := check(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = pub.Close(ctx)
	}
	return m, err
}

// leveretClientPublish is the client-level publish: Client.Publish, whose
// promise settles on the broker's confirmation, with at most l.window
// unsettled (it waits on the oldest, as the amqp091-go scenario does). Every
// promise is checked.
func leveretClientPublish(ctx context.Context, e *env, l load) (cost, error) {
	c, closeC, err := dialLeveret(ctx, e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeC()
	q, err := e.declareQueue(ctx, "client-publish")
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	n := l.messages
	body := make([]byte, l.body)
	ring := make([]*leveret.Promise[struct{}], l.window)
	return measure(func() error {
		for i := range n {
			slot := i % len(ring)
			if old := ring[slot]; old != nil {
				if _, err := old.Wait(ctx); err != nil {
					return fmt.Errorf("client publish: %w", err)
				}
			}
			ring[slot] = c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}})
		}
		for _, p := range ring {
			if p == nil {
				continue
			}
			if _, err := p.Wait(ctx); err != nil {
				return fmt.Errorf("client publish: %w", err)
			}
		}
		return nil
	})
}
