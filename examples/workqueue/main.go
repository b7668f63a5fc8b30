// Workqueue distributes tasks over competing workers with fair dispatch.
// Tasks are persistent messages in a durable queue; two workers consume it
// with a prefetch of 1 and acknowledge each task only when done, so the
// broker hands a worker a new task only after it finished the last one. One
// worker is slow (it sleeps -slow per task), the other fast, and the counts
// printed at the end show the fast worker did most of the work.
//
//	go run ./examples/workqueue [-n 20] [-slow 100ms]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func main() {
	n := flag.Int("n", 20, "how many tasks to publish")
	slow := flag.Duration("slow", 100*time.Millisecond, "how long the slow worker takes per task")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout, *n, *slow); err != nil {
		fmt.Fprintln(os.Stderr, "workqueue:", err)
		os.Exit(1)
	}
}

// brokerURL is $AMQP_URL or the local default broker.
func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// worker is one consumer and the time it spends per task.
type worker struct {
	name  string
	delay time.Duration
	cs    *leveret.Consumer
	done  int // tasks acknowledged; read after the worker's goroutine ended
}

func run(ctx context.Context, url string, out io.Writer, n int, slow time.Duration) (err error) {
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example workqueue"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	queue := fmt.Sprintf("workqueue-%d", os.Getpid())
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, derr := c.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(cctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("deleting the queue: %w", derr))
			return
		}
		fmt.Fprintf(out, "deleted queue %s\n", queue)
	}()

	// A durable queue, then two workers with a prefetch of 1. Consumers run
	// on channels of their own, so a Consume is not ordered behind the
	// declare of its queue: wait for the declare, then start both workers
	// and wait once for the pair.
	if _, err := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}).Wait(ctx); err != nil {
		return err
	}
	workers := []*worker{{name: "slow", delay: slow}, {name: "fast"}}
	starts := make([]*leveret.Promise[*leveret.Consumer], len(workers))
	for i := range workers {
		starts[i] = c.Consume(ops.Consume{Queue: queue, Prefetch: 1})
	}
	consumers, err := leveret.Collect(ctx, starts)
	if err != nil {
		return err
	}

	// Each worker acknowledges its task and reports it on finished.
	finished := make(chan string, n)
	var mu sync.Mutex // serialises the workers' printing
	var wg sync.WaitGroup
	for i, w := range workers {
		w.cs = consumers[i]
		wg.Go(func() { w.work(ctx, out, &mu, finished) })
	}
	defer func() {
		cancels := make([]leveret.Waiter, len(workers))
		for i, w := range workers {
			cancels[i] = w.cs.Cancel()
		}
		err = errors.Join(err, leveret.WaitAll(ctx, cancels...))
		wg.Wait()
	}()

	pubs := make([]*leveret.Promise[struct{}], n)
	for i := range n {
		pubs[i] = c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{
			DeliveryMode: ops.Persistent, Body: []byte("task " + strconv.Itoa(i+1))}})
	}
	if err := leveret.WaitAll(ctx, leveret.Waiters(pubs)...); err != nil {
		return err
	}
	mu.Lock()
	fmt.Fprintf(out, "published %d persistent tasks to durable queue %s\n", n, queue)
	mu.Unlock()

	for range n {
		select {
		case <-finished:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the workers: %w", ctx.Err())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, w := range workers {
		fmt.Fprintf(out, "%s worker did %d tasks\n", w.name, w.done)
	}
	return nil
}

// work processes tasks until the consumer ends: it sleeps w.delay, then
// acknowledges, which lets the broker send it the next task.
func (w *worker) work(ctx context.Context, out io.Writer, mu *sync.Mutex, finished chan<- string) {
	for d := range w.cs.Deliveries() {
		time.Sleep(w.delay)
		mu.Lock()
		fmt.Fprintf(out, "%s worker finished %s\n", w.name, d.Body)
		mu.Unlock()
		if _, err := d.Ack().Wait(ctx); err != nil {
			mu.Lock()
			fmt.Fprintf(out, "%s worker could not acknowledge %s: %v\n", w.name, d.Body, err)
			mu.Unlock()
			continue
		}
		mu.Lock()
		w.done++
		mu.Unlock()
		select {
		case finished <- w.name:
		default: // more acks than tasks cannot happen; never block here
		}
	}
}
