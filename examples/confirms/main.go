// Confirms publishes a stream of messages with publisher confirms and
// prints the confirmed rate and every kind of outcome.
//
// It declares a private queue, publishes -n messages of -size bytes through
// a confirm.Publisher whose window lets at most -window publishes await
// their confirmation, and waits until the broker has settled every one.
// Then it shows the two outcomes that are not an ack:
//
//   - a mandatory publish that no queue takes comes back as "returned",
//     with the broker's reason (312 NO_ROUTE);
//   - a publish to an exchange that does not exist makes the broker close
//     the channel (404 NOT_FOUND): the promise fails with that channel
//     error; it is never reported as a nack or as a success.
//
// Run it with:
//
//	AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ go run ./examples/confirms [-n 20000] [-window 1000] [-size 100]
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
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

var (
	count  = flag.Int("n", 20000, "how many messages to publish (1-1000000)")
	window = flag.Int("window", confirm.DefaultWindow, "most publishes awaiting confirmation at once")
	size   = flag.Int("size", 100, "body size in bytes (0-1048576)")
)

func main() {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "confirms:", err)
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

func run(ctx context.Context, url string, out io.Writer) (err error) {
	n, bodySize := *count, *size
	if n < 1 || n > 1_000_000 || bodySize < 0 || bodySize > 1<<20 {
		return fmt.Errorf("-n %d or -size %d out of range", n, bodySize)
	}
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example confirms"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	// Exclusive: the queue belongs to this connection and goes with it.
	q, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	if err != nil {
		return err
	}
	p, err := confirm.New(ctx, c, confirm.WithWindow(*window))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.Close(ctx)) }()

	if err := stream(ctx, p, q.Queue, n, bodySize, out); err != nil {
		return err
	}

	// A mandatory message to the default exchange with a routing key that
	// names no queue: nothing takes it, so the broker returns it.
	o, err := p.PublishSync(ctx, ops.Publish{RoutingKey: fmt.Sprintf("no-such-queue-%d", os.Getpid()), Mandatory: true,
		Message: ops.Message{Body: []byte("nobody wants me")}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "unroutable mandatory publish: %v\n", o)
	if o.Status != confirm.Returned {
		return fmt.Errorf("unroutable publish: got %v, want returned", o)
	}

	// A publish to an exchange that does not exist: the broker closes the
	// channel, and the publish fails with the channel error.
	_, err = p.PublishSync(ctx, ops.Publish{Exchange: fmt.Sprintf("no-such-exchange-%d", os.Getpid()),
		Message: ops.Message{Body: []byte("lost")}})
	var ce *leveret.ChannelError
	if !errors.As(err, &ce) || !errors.Is(err, leveret.ErrNotFound) {
		return fmt.Errorf("publish to a missing exchange: got %v, want a 404 channel error", err)
	}
	fmt.Fprintf(out, "publish to a missing exchange: failed: %v\n", err)
	late := p.Publish(ctx, ops.Publish{RoutingKey: q.Queue})
	fmt.Fprintf(out, "publishing afterwards is refused at once: %v\n", late.Err())
	return nil
}

// stream publishes n messages and tallies their outcomes.
func stream(ctx context.Context, p *confirm.Publisher, queue string, n, bodySize int, out io.Writer) error {
	body := make([]byte, bodySize)
	ps := make([]*leveret.Promise[confirm.Outcome], n)
	maxInFlight := 0
	start := time.Now()
	for i := range ps {
		ps[i] = p.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: body}})
		maxInFlight = max(maxInFlight, p.InFlight())
	}
	if err := p.Flush(ctx); err != nil {
		return err
	}
	elapsed := time.Since(start)

	tally := map[string]int{}
	for _, pr := range ps {
		o, err := pr.Wait(ctx)
		if err != nil {
			tally["failed"]++
			continue
		}
		tally[o.Status.String()]++
	}
	fmt.Fprintf(out, "published %d messages of %d bytes in %v: %.0f confirmed msg/s (window %d, at most %d in flight)\n",
		n, bodySize, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), p.Window(), maxInFlight)
	fmt.Fprintf(out, "outcomes: acked %d, nacked %d, returned %d, failed %d\n",
		tally["acked"], tally["nacked"], tally["returned"], tally["failed"])
	if tally["acked"] != n {
		return fmt.Errorf("%d of %d publishes acked", tally["acked"], n)
	}
	return nil
}
