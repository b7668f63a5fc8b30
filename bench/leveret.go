package main

import (
	"context"
	"fmt"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func dialLeveret(ctx context.Context, url string, opts ...leveret.Option) (*leveret.Client, func(), error) {
	c, err := leveret.Dial(ctx, url, append(opts, leveret.WithConnectionName("bench-leveret"))...)
	if err != nil {
		return nil, nil, err
	}
	return c, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(cctx)
	}, nil
}

// leveretDeclares declares e.cfg.declares queues from one goroutine with
// client-level QueueDeclare and one WaitAll at the end.
func leveretDeclares(ctx context.Context, e *env, url string) (cost, error) {
	var opts []leveret.Option
	if e.cfg.topology > 0 {
		opts = append(opts, leveret.WithTopologyChannels(e.cfg.topology))
	}
	c, closeC, err := dialLeveret(ctx, url, opts...)
	if err != nil {
		return cost{}, err
	}
	defer closeC()
	// Open the client's topology channels before timing, as the
	// amqp091-go runs open theirs: declare a few throwaway queues.
	warm := make([]string, 16)
	ws := make([]leveret.Waiter, len(warm))
	for i := range warm {
		warm[i] = e.name("warm")
		ws[i] = c.QueueDeclare(ops.QueueDeclare{Queue: warm[i], Durable: true})
	}
	if err := leveret.WaitAll(ctx, ws...); err != nil {
		return cost{}, err
	}
	if err := e.deleteQueues(ctx, warm...); err != nil {
		return cost{}, err
	}

	names := make([]string, e.cfg.declares)
	for i := range names {
		names[i] = e.name("decl")
	}
	ws = make([]leveret.Waiter, len(names))
	m, err := measure(func() error {
		for i, q := range names {
			ws[i] = c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true})
		}
		return leveret.WaitAll(ctx, ws...)
	})
	if derr := e.deleteQueues(ctx, names...); err == nil {
		err = derr
	}
	return m, err
}

// leveretPublish publishes from one goroutine on one channel without
// confirms, and stops the clock when the broker holds every message.
func leveretPublish(ctx context.Context, e *env) (cost, error) {
	c, closeC, err := dialLeveret(ctx, e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeC()
	q, err := e.declareQueue(ctx, "publish")
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	ch, err := c.Channel(ctx)
	if err != nil {
		return cost{}, err
	}
	n := e.cfg.messages
	body := make([]byte, bodySize)
	t0 := time.Now()
	m, err := measure(func() error {
		var last *leveret.Promise[struct{}]
		for range n {
			last = ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}})
		}
		if _, err := last.Wait(ctx); err != nil {
			return err
		}
		debugf("leveret: last publish written after %v", time.Since(t0))
		return e.waitCount(ctx, q, n)
	})
	if err == nil {
		err = ch.Close(ctx)
	}
	return m, err
}

// window bounds the unconfirmed publishes on one channel. Publish tags
// count from 1 in issue order; confirmations (multiple or single, in any
// order) mark tags in a ring, and the low edge advances over marked tags.
// It is how a leveret user gets a confirm window from the root API alone
// (-confirm-raw); the default scenario uses the confirm package.
type window struct {
	mu     chan struct{} // a one-slot lock that can also be selected on
	wake   chan struct{} // signalled when low advances
	size   uint64
	next   uint64 // tag of the next publish
	low    uint64 // lowest unconfirmed tag
	marked []bool // ring indexed by tag % len
	nacks  int
}

func newWindow(size int) *window {
	ring := 1
	for ring < 2*size {
		ring <<= 1
	}
	return &window{mu: make(chan struct{}, 1), wake: make(chan struct{}, 1), size: uint64(size),
		next: 1, low: 1, marked: make([]bool, ring)}
}

func (w *window) lock()   { w.mu <- struct{}{} }
func (w *window) unlock() { <-w.mu }

// acquire waits for room and takes the next tag.
func (w *window) acquire(ctx context.Context) error {
	_, err := w.acquireUpTo(ctx, 1)
	return err
}

// acquireUpTo waits for room and takes up to most tags (at least one).
func (w *window) acquireUpTo(ctx context.Context, most int) (int, error) {
	for {
		w.lock()
		if room := w.size - (w.next - w.low); room > 0 {
			k := int(min(room, uint64(most)))
			w.next += uint64(k)
			w.unlock()
			return k, nil
		}
		w.unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// confirm records a confirmation; it runs on leveret's dispatcher.
func (w *window) confirm(cf leveret.Confirmation) {
	w.lock()
	if !cf.Ack {
		w.nacks++
	}
	mask := uint64(len(w.marked) - 1)
	if cf.Multiple {
		for t := w.low; t <= cf.DeliveryTag; t++ {
			w.marked[t&mask] = true
		}
	} else if cf.DeliveryTag >= w.low {
		w.marked[cf.DeliveryTag&mask] = true
	}
	moved := false
	for w.low < w.next && w.marked[w.low&mask] {
		w.marked[w.low&mask] = false
		w.low++
		moved = true
	}
	w.unlock()
	if moved {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// drain waits until every tag taken has been confirmed.
func (w *window) drain(ctx context.Context) error {
	for {
		w.lock()
		done, nacks := w.low == w.next, w.nacks
		w.unlock()
		if done {
			if nacks > 0 {
				return fmt.Errorf("%d publishes nacked", nacks)
			}
			return nil
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// leveretConfirmed publishes with publisher confirms and at most
// e.cfg.window unconfirmed messages, until every one is confirmed: with the
// confirm package, or with -confirm-raw on the root API (ConfirmSelect,
// OnConfirm and the window type).
func leveretConfirmed(ctx context.Context, e *env) (cost, error) {
	if !e.cfg.confirmRaw {
		return leveretConfirmPkg(ctx, e, e.cfg.load())
	}
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
	ch, err := c.Channel(ctx)
	if err != nil {
		return cost{}, err
	}
	w := newWindow(e.cfg.window)
	ch.OnConfirm(w.confirm)
	if _, err := ch.ConfirmSelect().Wait(ctx); err != nil {
		return cost{}, err
	}
	n := e.cfg.messages
	body := make([]byte, bodySize)
	m, err := measure(func() error {
		for range n {
			if err := w.acquire(ctx); err != nil {
				return err
			}
			ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}})
		}
		return w.drain(ctx)
	})
	if err == nil {
		err = ch.Close(ctx)
	}
	return m, err
}

// leveretConsume consumes l.messages from a pre-filled queue with
// manual acks (one per message for ackEvery 1, else a multiple ack every
// ackEvery messages) and stops the clock when the broker has answered the
// channel close that follows the last ack.
func leveretConsume(ctx context.Context, e *env, l load, ackEvery int) (cost, error) {
	n := l.messages
	q, err := e.prefill(ctx, l)
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	c, closeC, err := dialLeveret(ctx, e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeC()
	ch, err := c.Channel(ctx)
	if err != nil {
		return cost{}, err
	}
	return measure(func() error {
		cs, err := ch.Consume(ops.Consume{Queue: q, Prefetch: uint16(l.prefetch)}).Wait(ctx)
		if err != nil {
			return err
		}
		got := 0
		for d := range cs.Deliveries() {
			got++
			var ack *leveret.Promise[struct{}]
			if ackEvery == 1 {
				ack = d.Ack()
			} else if got%ackEvery == 0 || got == n {
				ack = ch.Ack(ops.Ack{DeliveryTag: d.DeliveryTag, Multiple: true})
			}
			if ack != nil {
				if err := ack.Err(); err != nil && err != leveret.ErrPending {
					return err
				}
			}
			if got == n {
				break
			}
		}
		if got != n {
			return fmt.Errorf("consumer ended after %d of %d deliveries: %v", got, n, cs.Err())
		}
		return ch.Close(ctx)
	})
}
