// Oddeven routes messages by a property of their content: a producer
// publishes random integers to a direct exchange with routing key "odd" or
// "even", and two consumers, one per queue, print what they get ("even
// consumer got 42"). It stops after -n messages and checks that every
// message arrived exactly once, at the consumer of its parity.
//
// Each consumer runs on a channel of its own (Client.Consume) with a
// prefetch limit, and acknowledges every delivery. The topology and the
// publishes are issued without waiting and awaited once per batch.
//
//	go run ./examples/oddeven [-n 20]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func main() {
	n := flag.Int("n", 20, "how many numbers to publish")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout, *n); err != nil {
		fmt.Fprintln(os.Stderr, "oddeven:", err)
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

// received is one delivery as a consumer saw it.
type received struct {
	consumer string // "odd" or "even"
	id       int    // the message's position in the producer's sequence
	value    int
}

func run(ctx context.Context, url string, out io.Writer, n int) (err error) {
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example oddeven"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	exchange := fmt.Sprintf("oddeven-%d", os.Getpid())
	parities := []string{"odd", "even"}
	queues := map[string]string{} // parity -> queue name

	// Declare the exchange and one exclusive queue per parity, bound with
	// the parity as routing key; the client orders each bind after the
	// declares it depends on, so all of it goes out at once.
	defer cleanup(ctx, c, out, &err, exchange, queues)
	topology := []leveret.Waiter{c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: exchange, Kind: ops.Direct})}
	for _, p := range parities {
		queues[p] = exchange + "-" + p
		topology = append(topology,
			c.QueueDeclare(ops.QueueDeclare{Queue: queues[p], Exclusive: true}),
			c.QueueBind(ops.QueueBind{Queue: queues[p], Exchange: exchange, RoutingKey: p}))
	}
	if err := leveret.WaitAll(ctx, topology...); err != nil {
		return fmt.Errorf("declaring: %w", err)
	}

	// Start both consumers, then wait for the pair.
	starts := make([]*leveret.Promise[*leveret.Consumer], len(parities))
	for i, p := range parities {
		starts[i] = c.Consume(ops.Consume{Queue: queues[p], Prefetch: 10})
	}
	consumers, err := leveret.Collect(ctx, starts)
	if err != nil {
		return fmt.Errorf("consuming: %w", err)
	}
	// stop ends the consumers' hand-over to check if check gives up early.
	consumeCtx, stop := context.WithCancel(ctx)
	got := make(chan received, n)
	var mu sync.Mutex // serialises the consumers' printing
	var wg sync.WaitGroup
	for i, cs := range consumers {
		wg.Go(func() { consume(consumeCtx, cs, parities[i], out, &mu, got) })
	}
	defer wg.Wait() // the consumers end when cancelled, below
	defer func() {
		stop()
		cancels := make([]leveret.Waiter, len(consumers))
		for i, cs := range consumers {
			cancels[i] = cs.Cancel()
		}
		err = errors.Join(err, leveret.WaitAll(ctx, cancels...))
		for _, cs := range consumers {
			err = errors.Join(err, cs.Err())
		}
	}()

	sent, err := produce(ctx, c, exchange, n)
	if err != nil {
		return err
	}
	mu.Lock()
	fmt.Fprintf(out, "producer published %d numbers\n", n)
	mu.Unlock()

	return check(ctx, sent, got, out, &mu)
}

// produce publishes n random integers, each with its parity as routing key
// and its sequence number as message id, and waits once for all of them.
func produce(ctx context.Context, c *leveret.Client, exchange string, n int) ([]int, error) {
	sent := make([]int, n)
	pubs := make([]*leveret.Promise[struct{}], n)
	for i := range n {
		sent[i] = rand.IntN(1000)
		pubs[i] = c.Publish(ctx, ops.Publish{Exchange: exchange, RoutingKey: parity(sent[i]),
			Message: ops.Message{MessageID: strconv.Itoa(i), Body: []byte(strconv.Itoa(sent[i]))}})
	}
	if err := leveret.WaitAll(ctx, leveret.Waiters(pubs)...); err != nil {
		return nil, fmt.Errorf("publishing: %w", err)
	}
	return sent, nil
}

// consume prints and acknowledges every delivery until the consumer ends.
func consume(ctx context.Context, cs *leveret.Consumer, name string, out io.Writer, mu *sync.Mutex, got chan<- received) {
	for d := range cs.Deliveries() {
		value, verr := strconv.Atoi(string(d.Body))
		id, ierr := strconv.Atoi(d.MessageID)
		mu.Lock()
		fmt.Fprintf(out, "%s consumer got %s\n", name, d.Body)
		mu.Unlock()
		if _, err := d.Ack().Wait(ctx); err != nil || verr != nil || ierr != nil {
			id = -1 // reported by check as a bad message
		}
		select {
		case got <- received{consumer: name, id: id, value: value}:
		case <-ctx.Done(): // nobody is checking any more; drain until the cancel ends the stream
		}
	}
}

// check waits until n messages have arrived and verifies that each arrived
// once, at the consumer of its parity.
func check(ctx context.Context, sent []int, got <-chan received, out io.Writer, mu *sync.Mutex) error {
	seen := make([]bool, len(sent))
	count := map[string]int{}
	for range sent {
		var r received
		select {
		case r = <-got:
		case <-ctx.Done():
			return fmt.Errorf("waiting for deliveries: %w", ctx.Err())
		}
		switch {
		case r.id < 0 || r.id >= len(sent) || sent[r.id] != r.value:
			return fmt.Errorf("%s consumer got an unexpected message: %+v", r.consumer, r)
		case seen[r.id]:
			return fmt.Errorf("%s consumer got message %d twice", r.consumer, r.id)
		case parity(r.value) != r.consumer:
			return fmt.Errorf("%s consumer got %d", r.consumer, r.value)
		}
		seen[r.id] = true
		count[r.consumer]++
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(out, "all %d messages arrived at the right consumer (odd: %d, even: %d)\n", len(sent), count["odd"], count["even"])
	return nil
}

func parity(v int) string {
	if v%2 == 0 {
		return "even"
	}
	return "odd"
}

// cleanup deletes the queues and the exchange, on a context of its own so
// that it runs even when ctx has ended.
func cleanup(ctx context.Context, c *leveret.Client, out io.Writer, err *error, exchange string, queues map[string]string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	deletes := []leveret.Waiter{c.ExchangeDelete(ops.ExchangeDelete{Exchange: exchange})}
	for _, q := range queues {
		deletes = append(deletes, c.QueueDelete(ops.QueueDelete{Queue: q}))
	}
	if cerr := leveret.WaitAll(cctx, deletes...); cerr != nil {
		*err = errors.Join(*err, fmt.Errorf("cleaning up: %w", cerr))
		return
	}
	fmt.Fprintln(out, "deleted the queues and the exchange")
}
