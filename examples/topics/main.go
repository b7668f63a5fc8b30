// Topics shows routing by pattern with a topic exchange. Three queues are
// bound with the patterns "kern.*" (one word after "kern"), "*.critical"
// (one word before "critical") and "#" (anything); the program publishes
// a set of routing keys and prints which queue got which key, checking the
// result against the matching rules.
//
// It runs on one explicit channel: the declares, binds, publishes and the
// basic.get calls that read the queues back all go out at once, and the
// broker runs them in order, so every Get sees the messages published
// before it.
//
//	go run ./examples/topics [-n 1]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func main() {
	n := flag.Int("n", 1, "how many times to publish each routing key")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout, *n); err != nil {
		fmt.Fprintln(os.Stderr, "topics:", err)
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

// patterns are the binding keys, one queue each; keys are what we publish.
var (
	patterns = []string{"kern.*", "*.critical", "#"}
	keys     = []string{"kern.info", "kern.critical", "app.critical", "app.info", "kern.disk.full", "critical"}
)

// want is which keys each pattern matches: "*" is exactly one word, "#"
// zero or more.
var want = map[string][]string{
	"kern.*":     {"kern.info", "kern.critical"},
	"*.critical": {"kern.critical", "app.critical"},
	"#":          keys,
}

func run(ctx context.Context, url string, out io.Writer, n int) (err error) {
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example topics"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()
	ch, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ch.Close(ctx)) }()

	exchange := fmt.Sprintf("topics-%d", os.Getpid())
	queue := func(i int) string { return fmt.Sprintf("%s-q%d", exchange, i) }
	defer cleanup(ctx, c, out, &err, exchange, len(patterns), queue)

	// Topology and messages, all issued at once.
	batch := []leveret.Waiter{ch.ExchangeDeclare(ops.ExchangeDeclare{Exchange: exchange, Kind: ops.Topic})}
	for i, p := range patterns {
		batch = append(batch,
			ch.QueueDeclare(ops.QueueDeclare{Queue: queue(i), Exclusive: true}),
			ch.QueueBind(ops.QueueBind{Queue: queue(i), Exchange: exchange, RoutingKey: p}))
	}
	for range n {
		for _, k := range keys {
			batch = append(batch, ch.Publish(ctx, ops.Publish{Exchange: exchange, RoutingKey: k, Message: ops.Message{Body: []byte(k)}}))
		}
	}
	// One Get per message each queue can hold, plus one that must find it
	// empty. NoAck: the broker forgets the messages as it hands them over.
	gets := make([][]*leveret.Promise[leveret.GetResult], len(patterns))
	for i := range patterns {
		for range n*len(keys) + 1 {
			gets[i] = append(gets[i], ch.Get(ops.Get{Queue: queue(i), NoAck: true}))
		}
	}
	if err := leveret.WaitAll(ctx, batch...); err != nil {
		return err
	}
	fmt.Fprintf(out, "published %d messages with keys %s\n", n*len(keys), strings.Join(keys, ", "))

	var mismatch []string
	for i, p := range patterns {
		results, err := leveret.Collect(ctx, gets[i])
		if err != nil {
			return err
		}
		var got []string
		for _, r := range results {
			if !r.Empty() {
				got = append(got, r.Delivery.RoutingKey)
			}
		}
		fmt.Fprintf(out, "queue bound with %-12q got %s\n", p, strings.Join(got, ", "))
		var expect []string
		for range n {
			expect = append(expect, want[p]...)
		}
		if !slices.Equal(got, expect) {
			mismatch = append(mismatch, fmt.Sprintf("%q: got %v, want %v", p, got, expect))
		}
	}
	if mismatch != nil {
		return fmt.Errorf("routing differs from the topic rules: %s", strings.Join(mismatch, "; "))
	}
	fmt.Fprintln(out, "every queue got exactly the keys its pattern matches")
	return nil
}

// cleanup deletes the queues and the exchange on the client's own channels
// (they work even if ch failed), with a context of its own.
func cleanup(ctx context.Context, c *leveret.Client, out io.Writer, err *error, exchange string, nq int, queue func(int) string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	deletes := []leveret.Waiter{c.ExchangeDelete(ops.ExchangeDelete{Exchange: exchange})}
	for i := range nq {
		deletes = append(deletes, c.QueueDelete(ops.QueueDelete{Queue: queue(i)}))
	}
	if cerr := leveret.WaitAll(cctx, deletes...); cerr != nil {
		*err = errors.Join(*err, fmt.Errorf("cleaning up: %w", cerr))
		return
	}
	fmt.Fprintln(out, "deleted the queues and the exchange")
}
