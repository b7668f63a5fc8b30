// Workqueue distributes tasks over competing workers with fair dispatch.
// Tasks are persistent messages in a durable queue; two workers consume it
// with a prefetch of 1 and acknowledge each task only when done, so the
// broker hands a worker a new task only after it finished the last one. One
// worker is slow (it sleeps -slow per task), the other fast, and the counts
// printed at the end show the fast worker did most of the work.
//
// SIGTERM or SIGINT stops the workers gracefully: each consumer is shut
// down (no new tasks), the task a worker is on is finished and acknowledged,
// and the tasks not started stay in the queue for the next run. With
// -sigterm-after K the program sends itself SIGTERM after K tasks, to show
// that drain.
//
//	go run ./examples/workqueue [-n 20] [-slow 100ms] [-sigterm-after K]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func main() {
	n := flag.Int("n", 20, "how many tasks to publish")
	slow := flag.Duration("slow", 100*time.Millisecond, "how long the slow worker takes per task")
	sigtermAfter := flag.Int("sigterm-after", 0, "send this process SIGTERM after this many tasks (0: never)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// stop ends at SIGTERM or SIGINT: the signal to drain and exit.
	stop, stopNotify := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopNotify()
	if err := run(ctx, stop, brokerURL(), os.Stdout, *n, *slow, *sigtermAfter); err != nil {
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

func run(ctx, stop context.Context, url string, out io.Writer, n int, slow time.Duration, sigtermAfter int) (err error) {
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example workqueue"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	queue := fmt.Sprintf("workqueue-%d", os.Getpid())
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		ok, derr := c.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(cctx)
		if derr != nil {
			err = errors.Join(err, fmt.Errorf("deleting the queue: %w", derr))
			return
		}
		fmt.Fprintf(out, "deleted queue %s with %d tasks left in it\n", queue, ok.MessageCount)
	}()

	// A durable queue, then two workers with a prefetch of 1. Each Consume
	// goes out once the client-level declare of its queue has completed, so
	// all three are issued at once and waited for together.
	declared := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true})
	workers := []*worker{{name: "slow", delay: slow}, {name: "fast"}}
	starts := make([]*leveret.Promise[*leveret.Consumer], len(workers))
	for i := range workers {
		starts[i] = c.Consume(ops.Consume{Queue: queue, Prefetch: 1})
	}
	consumers, err := leveret.Collect(ctx, starts)
	if err != nil {
		return err
	}
	if _, err := declared.Wait(ctx); err != nil {
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
	defer func() { // runs after the drain below: the counts are final
		mu.Lock()
		defer mu.Unlock()
		for _, w := range workers {
			fmt.Fprintf(out, "%s worker did %d tasks\n", w.name, w.done)
		}
	}()
	// At the end, or at SIGTERM: shut each consumer down gracefully. No new
	// task arrives; the one a worker holds is finished and acknowledged,
	// then the consumer's channel closes and its Deliveries loop ends.
	defer func() {
		var swg sync.WaitGroup
		errs := make([]error, len(workers))
		for i, w := range workers {
			swg.Go(func() { errs[i] = w.cs.Shutdown(ctx) })
		}
		swg.Wait()
		err = errors.Join(err, errors.Join(errs...))
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

	for i := range n {
		if i == sigtermAfter && sigtermAfter > 0 {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
		select {
		case <-finished:
		case <-stop.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("waiting for the workers: %w", ctx.Err())
			}
			mu.Lock()
			fmt.Fprintln(out, "SIGTERM: draining the workers")
			mu.Unlock()
			return nil
		}
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
