package main

import (
	"context"
	"fmt"
	"runtime"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// The many-consumers scenario: e.cfg.consumers queues, each with a consumer
// of its own (a channel each, prefetch 10, manual acks) on one connection,
// as a service with many work queues runs. The clock covers starting them
// all (consume-ok for each); the queues are declared before it. Afterwards
// the heap the consumers keep (after a GC) and the goroutines they added are
// taken per consumer.

const consumersPrefetch = 10

// retained runs setup as the timed section and adds to its cost the heap
// and goroutines it left behind, measured after a GC.
func retained(setup func() error) (cost, error) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0, g0 := ms.HeapAlloc, runtime.NumGoroutine()
	m, err := measure(setup)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	m.heap = int64(ms.HeapAlloc) - int64(heap0)
	m.goroutines = runtime.NumGoroutine() - g0
	return m, err
}

func (e *env) consumerQueues(ctx context.Context) ([]string, error) {
	qs := make([]string, e.cfg.consumers)
	var ws []leveret.Waiter
	for i := range qs {
		qs[i] = e.name("many")
		ws = append(ws, e.admin.QueueDeclare(ops.QueueDeclare{Queue: qs[i], Durable: true, AutoDelete: true}))
	}
	return qs, leveret.WaitAll(ctx, ws...)
}

func leveretConsumers(ctx context.Context, e *env) (cost, error) {
	c, closeC, err := dialLeveret(ctx, e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeC()
	qs, err := e.consumerQueues(ctx)
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, qs...)
	var css []*leveret.Consumer
	m, err := retained(func() error {
		ps := make([]*leveret.Promise[*leveret.Consumer], len(qs))
		for i, q := range qs {
			ps[i] = c.Consume(ops.Consume{Queue: q, Prefetch: consumersPrefetch})
		}
		css, err = leveret.Collect(ctx, ps)
		return err
	})
	for _, cs := range css {
		cs.Cancel()
	}
	runtime.KeepAlive(css)
	return m, err
}

func amqpConsumers(ctx context.Context, e *env) (cost, error) {
	conn, closeConn, err := dialAMQP(e.url)
	if err != nil {
		return cost{}, err
	}
	defer closeConn()
	qs, err := e.consumerQueues(ctx)
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, qs...)
	chans := make([]*amqp.Channel, 0, len(qs))
	streams := make([]<-chan amqp.Delivery, 0, len(qs))
	m, err := retained(func() error {
		for _, q := range qs {
			ch, err := conn.Channel()
			if err != nil {
				return err
			}
			if err := ch.Qos(consumersPrefetch, 0, false); err != nil {
				return err
			}
			d, err := ch.Consume(q, "", false, false, false, false, nil)
			if err != nil {
				return fmt.Errorf("consume %s: %w", q, err)
			}
			chans, streams = append(chans, ch), append(streams, d)
		}
		return nil
	})
	for _, ch := range chans {
		ch.Close()
	}
	runtime.KeepAlive(streams)
	return m, err
}
