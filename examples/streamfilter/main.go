// Streamfilter shows stream filtering over AMQP 0-9-1 (RabbitMQ 3.13 and
// later, so every 4.x): a publisher tags each message with a filter value
// (the x-stream-filter-value header), and a consumer asks the stream for
// one value only (the x-stream-filter consumer argument).
//
// The broker filters whole chunks with a Bloom filter: it skips chunks
// that hold no message with the value asked for, so a consumer reads far
// less of a large stream, but a chunk that holds one may bring others
// along. The consumer therefore checks each message's value itself and
// drops the others, as RabbitMQ's documentation asks.
//
//	AMQP_URL=amqp://guest:guest@127.0.0.1:5690/ go run ./examples/streamfilter [-n 300]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

var perRegion = flag.Int("n", 300, "messages per region (1-100000)")

// errNoStreamFilter is run's error on a broker older than 3.13.
var errNoStreamFilter = errors.New("stream filtering needs RabbitMQ 3.13 or later")

func main() {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "streamfilter:", err)
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

var regions = []string{"california", "texas", "oregon"}

func run(ctx context.Context, url string, out io.Writer) (err error) {
	n := *perRegion
	if n < 1 || n > 100_000 {
		return fmt.Errorf("-n %d out of range", n)
	}
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example streamfilter"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()
	if v, _ := c.ServerProperties()["version"].(string); !atLeast313(v) {
		return fmt.Errorf("%w (this one is %s)", errNoStreamFilter, v)
	}

	// A stream is a durable queue; delete it at the end (waited for: the
	// deferred Wait runs before Close).
	stream := fmt.Sprintf("leveret-example-streamfilter-%d", time.Now().UnixNano())
	if _, err := c.QueueDeclare(ops.QueueDeclare{Queue: stream, Durable: true,
		Args: ops.Table{"x-queue-type": "stream"}}).Wait(ctx); err != nil {
		return err
	}
	defer func() {
		_, derr := c.QueueDelete(ops.QueueDelete{Queue: stream}).Wait(ctx)
		err = errors.Join(err, derr)
	}()

	// Publish each region's messages as a batch of their own, each message
	// tagged with its region: the broker writes them in chunks of their own,
	// which the filter can skip whole.
	for i, region := range regions {
		ws := make([]leveret.Waiter, n)
		for j := range ws {
			ws[j] = c.Publish(ctx, ops.Publish{RoutingKey: stream, Message: ops.Message{
				Headers: ops.Table{"x-stream-filter-value": region},
				Body:    []byte(region + " " + strconv.Itoa(i*n+j)),
			}})
		}
		if err := leveret.WaitAll(ctx, ws...); err != nil {
			return err
		}
	}

	// Consume from the start, asking for california only. A stream consumer
	// needs a prefetch and manual acks.
	want := regions[0]
	cs, err := c.Consume(ops.Consume{Queue: stream, Prefetch: 100, Args: ops.Table{
		"x-stream-offset": "first",
		"x-stream-filter": want,
		// Messages published without a filter value are not wanted here.
		"x-stream-match-unfiltered": false,
	}}).Wait(ctx)
	if err != nil {
		return err
	}
	matched, others := 0, 0
	for matched < n {
		select {
		case d, ok := <-cs.Deliveries():
			if !ok {
				return fmt.Errorf("consumer ended: %w", cs.Err())
			}
			if v, _ := d.Headers["x-stream-filter-value"].(string); v == want {
				matched++
			} else {
				others++ // came along in a chunk that also holds california
			}
			if _, err := d.Ack().Wait(ctx); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("%d of %d %s messages: %w", matched, n, want, ctx.Err())
		}
	}
	if _, err := cs.Cancel().Wait(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "published %d messages, %d per region\n", n*len(regions), n)
	fmt.Fprintf(out, "received all %d %s messages; the broker's chunk filter let %d others through, dropped here\n", matched, want, others)
	return nil
}

// atLeast313 reports whether a RabbitMQ version such as "4.3.6" is 3.13 or
// later.
func atLeast313(version string) bool {
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	return err1 == nil && err2 == nil && (ma > 3 || ma == 3 && mi >= 13)
}
