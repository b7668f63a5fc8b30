// Pipeline shows what issuing without waiting buys: one goroutine declares
// -n queues (default 1000), each call returning a promise at once, then
// waits once for all of them. It prints how long issuing took and how long
// until the broker had answered every declare, then deletes the queues the
// same way.
//
// The client spreads these calls over a few channels of its own and
// pipelines within each, so the broker works on several at a time and no
// call waits for the previous one's round trip.
//
//	go run ./examples/pipeline [-n 1000]
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
	n := flag.Int("n", 1000, "how many queues to declare and delete")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout, *n); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", err)
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
	if n < 1 {
		return fmt.Errorf("-n %d: need at least one queue", n)
	}
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example pipeline"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("pipeline-%d-%d", os.Getpid(), i)
	}

	// Exclusive queues vanish with the connection even if this program
	// fails half way; on success they are deleted explicitly below.
	start := time.Now()
	declares := make([]*leveret.Promise[ops.QueueDeclareOk], n)
	for i, name := range names {
		declares[i] = c.QueueDeclare(ops.QueueDeclare{Queue: name, Exclusive: true})
	}
	issued := time.Since(start)
	oks, err := leveret.Collect(ctx, declares)
	if err != nil {
		return fmt.Errorf("declaring: %w", err)
	}
	report(out, "declared", n, issued, time.Since(start))
	if oks[n-1].Queue != names[n-1] {
		return fmt.Errorf("the broker declared %q, want %q", oks[n-1].Queue, names[n-1])
	}

	start = time.Now()
	deletes := make([]*leveret.Promise[ops.QueueDeleteOk], n)
	for i, name := range names {
		deletes[i] = c.QueueDelete(ops.QueueDelete{Queue: name})
	}
	issued = time.Since(start)
	if err := leveret.WaitAll(ctx, leveret.Waiters(deletes)...); err != nil {
		return fmt.Errorf("deleting: %w", err)
	}
	report(out, "deleted", n, issued, time.Since(start))
	return nil
}

func report(out io.Writer, what string, n int, issued, total time.Duration) {
	fmt.Fprintf(out, "%s %d queues: issued in %v, all done after %v (%.0f per second)\n",
		what, n, issued.Round(time.Microsecond), total.Round(time.Millisecond), float64(n)/total.Seconds())
}
