package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func dialAMQP(url string) (*amqp.Connection, func(), error) {
	cfg := amqp.Config{Properties: amqp.Table{"connection_name": "bench-amqp091-go"}}
	conn, err := amqp.DialConfig(url, cfg)
	if err != nil {
		return nil, nil, err
	}
	return conn, func() { conn.Close() }, nil
}

// amqpDeclares declares e.cfg.declares queues with amqp091-go from
// `workers` goroutines, each on its own channel opened before timing.
func amqpDeclares(ctx context.Context, e *env, url string, workers int) (cost, error) {
	conn, closeConn, err := dialAMQP(url)
	if err != nil {
		return cost{}, err
	}
	defer closeConn()
	chans := make([]*amqp.Channel, workers)
	for i := range chans {
		if chans[i], err = conn.Channel(); err != nil {
			return cost{}, err
		}
	}
	names := make([]string, e.cfg.declares)
	for i := range names {
		names[i] = e.name("decl")
	}
	m, err := measure(func() error {
		if workers == 1 {
			for _, q := range names {
				if _, err := chans[0].QueueDeclare(q, true, false, false, false, nil); err != nil {
					return err
				}
			}
			return nil
		}
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for w := range workers {
			// Owner: this timed section; exits after its share of names.
			wg.Go(func() {
				for i := w; i < len(names); i += workers {
					if _, err := chans[w].QueueDeclare(names[i], true, false, false, false, nil); err != nil {
						errs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	if derr := e.deleteQueues(ctx, names...); err == nil {
		err = derr
	}
	return m, err
}

// amqpPublish publishes from one goroutine on one channel without
// confirms, and stops the clock when the broker holds every message.
func amqpPublish(ctx context.Context, e *env) (cost, error) {
	conn, closeConn, err := dialAMQP(e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeConn()
	q, err := e.declareQueue(ctx, "publish")
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	ch, err := conn.Channel()
	if err != nil {
		return cost{}, err
	}
	n := e.cfg.messages
	body := make([]byte, bodySize)
	t0 := time.Now()
	m, err := measure(func() error {
		for range n {
			if err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body}); err != nil {
				return err
			}
		}
		debugf("amqp091-go: last publish written after %v", time.Since(t0))
		return e.waitCount(ctx, q, n)
	})
	if err == nil {
		err = ch.Close()
	}
	return m, err
}

// amqpConfirmed publishes with confirms, keeping at most l.window
// DeferredConfirmations outstanding and waiting on the oldest when full.
func amqpConfirmed(ctx context.Context, e *env, l load) (cost, error) {
	conn, closeConn, err := dialAMQP(e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeConn()
	q, err := e.declareQueue(ctx, "confirm")
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	ch, err := conn.Channel()
	if err != nil {
		return cost{}, err
	}
	if err := ch.Confirm(false); err != nil {
		return cost{}, err
	}
	n, size := l.messages, l.window
	body := make([]byte, l.body)
	ring := make([]*amqp.DeferredConfirmation, size)
	m, err := measure(func() error {
		head, count := 0, 0
		wait := func() error {
			ok, err := ring[head].WaitContext(ctx)
			ring[head] = nil
			head, count = (head+1)%size, count-1
			if err == nil && !ok {
				err = errors.New("publish nacked")
			}
			return err
		}
		for range n {
			if count == size {
				if err := wait(); err != nil {
					return err
				}
			}
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body})
			if err != nil {
				return err
			}
			ring[(head+count)%size] = dc
			count++
		}
		for count > 0 {
			if err := wait(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = ch.Close()
	}
	return m, err
}

// amqpConsume consumes l.messages from a pre-filled queue with manual
// acks, like leveretConsume.
func amqpConsume(ctx context.Context, e *env, l load, ackEvery int) (cost, error) {
	n := l.messages
	q, err := e.prefill(ctx, l)
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	conn, closeConn, err := dialAMQP(e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeConn()
	ch, err := conn.Channel()
	if err != nil {
		return cost{}, err
	}
	return measure(func() error {
		if err := ch.Qos(l.prefetch, 0, false); err != nil {
			return err
		}
		msgs, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			return err
		}
		got := 0
		for d := range msgs {
			got++
			if ackEvery == 1 {
				err = d.Ack(false)
			} else if got%ackEvery == 0 || got == n {
				err = d.Ack(true)
			}
			if err != nil {
				return err
			}
			if got == n {
				break
			}
		}
		if got != n {
			return fmt.Errorf("consumer ended after %d of %d deliveries", got, n)
		}
		return ch.Close()
	})
}
