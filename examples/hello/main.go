// Hello shows the smallest round trip through RabbitMQ with leveret: it
// opens a channel, declares a direct exchange and a queue, binds them,
// publishes "Hello, World!", gets the message back with basic.get, prints it
// and acknowledges it, then deletes what it declared.
//
// Every operation is issued without waiting; the program waits once for the
// whole batch. They all go out on one explicit channel, so the broker runs
// them in order: the Get is sure to see the message published before it.
//
//	go run ./examples/hello [-n 1]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func main() {
	n := flag.Int("n", 1, "how many greetings to publish and get")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout, *n); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
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

func run(ctx context.Context, url string, out io.Writer, n int) (err error) {
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example hello"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	ch, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ch.Close(ctx)) }()

	// The process id keeps two runs at the same time apart.
	exchange := fmt.Sprintf("hello-%d", os.Getpid())
	queue := exchange

	// Delete what we declare even when something below fails. This runs on
	// the client's own channels, which work even if ch has failed.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		qd := c.QueueDelete(ops.QueueDelete{Queue: queue})
		xd := c.ExchangeDelete(ops.ExchangeDelete{Exchange: exchange})
		if cerr := leveret.WaitAll(cctx, qd, xd); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
			return
		}
		fmt.Fprintln(out, "deleted the queue and the exchange")
	}()

	// Issue everything, then wait once.
	batch := []leveret.Waiter{
		ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: exchange, Kind: ops.Direct}),
		ch.QueueDeclare(ops.QueueDeclare{Queue: queue, Durable: true}),
		ch.QueueBind(ops.QueueBind{Queue: queue, Exchange: exchange, RoutingKey: "greeting"}),
	}
	gets := make([]*leveret.Promise[leveret.GetResult], n)
	for range n {
		batch = append(batch, ch.Publish(ctx, ops.Publish{Exchange: exchange, RoutingKey: "greeting",
			Message: ops.Message{ContentType: "text/plain", Body: []byte("Hello, World!")}}))
	}
	for i := range gets {
		gets[i] = ch.Get(ops.Get{Queue: queue})
	}
	if err := leveret.WaitAll(ctx, batch...); err != nil {
		return err
	}
	fmt.Fprintf(out, "declared exchange %q and queue %q, bound with key \"greeting\", published %d message(s)\n", exchange, queue, n)

	results, err := leveret.Collect(ctx, gets)
	if err != nil {
		return err
	}
	acks := make([]leveret.Waiter, 0, n)
	for _, r := range results {
		if r.Empty() {
			return errors.New("the queue was empty: the message did not arrive")
		}
		d := r.Delivery
		fmt.Fprintf(out, "got %q (exchange %q, routing key %q, %d left in the queue)\n", d.Body, d.Exchange, d.RoutingKey, d.MessageCount)
		acks = append(acks, d.Ack())
	}
	if err := leveret.WaitAll(ctx, acks...); err != nil {
		return err
	}
	fmt.Fprintf(out, "acknowledged %d message(s)\n", len(acks))
	return nil
}
