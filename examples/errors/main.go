// Errors shows how broker errors reach a leveret program, and that a
// channel error leaves the connection working.
//
//  1. Redeclaring a queue with different arguments fails with 406
//     PRECONDITION_FAILED. The program matches it with errors.Is and reads
//     the reply code and text from the *leveret.ChannelError. On the
//     client's own channels only the failing call fails: a call issued
//     right behind it still succeeds.
//  2. Publishing to a missing exchange gets no reply from the broker, only
//     a channel close (404 NOT_FOUND). On an explicit channel it surfaces
//     at the next wait point on that channel: the -n operations issued
//     behind the publish fail as "not executed", wrapping the 404, and
//     the channel's Err reports the 404.
//  3. The client itself keeps working: a publish, a get and a new channel
//     all succeed afterwards.
//
// Run it with
//
//	go run ./examples/errors [-n 3]
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
	n := flag.Int("n", 3, "how many operations to issue behind the failing publish")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout, *n); err != nil {
		fmt.Fprintln(os.Stderr, "errors:", err)
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
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example errors"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	queue := fmt.Sprintf("errors-%d", os.Getpid())
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, derr := c.QueueDelete(ops.QueueDelete{Queue: queue}).Wait(cctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("deleting the queue: %w", derr))
		}
	}()

	if err := preconditionFailed(ctx, c, out, queue); err != nil {
		return err
	}
	if err := notFound(ctx, c, out, queue, n); err != nil {
		return err
	}
	return stillWorking(ctx, c, out, queue)
}

// preconditionFailed redeclares a queue with a different message TTL.
func preconditionFailed(ctx context.Context, c *leveret.Client, out io.Writer, queue string) error {
	fmt.Fprintln(out, "== 1. redeclare a queue with different arguments")
	first := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Exclusive: true, Args: ops.Table{"x-message-ttl": 60000}})
	again := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Exclusive: true, Args: ops.Table{"x-message-ttl": 1000}})
	behind := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Passive: true})

	// Wait once; WaitAll reports every failure in argument order, each naming
	// its operation and queue (leveret.OperationError).
	err := leveret.WaitAll(ctx, first, again, behind)
	if !errors.Is(err, leveret.ErrPreconditionFailed) {
		return fmt.Errorf("redeclare: got %v, want 406 PRECONDITION_FAILED", err)
	}
	var ce *leveret.ChannelError
	if !errors.As(err, &ce) {
		return fmt.Errorf("redeclare: %v is not a *leveret.ChannelError", err)
	}
	fmt.Fprintf(out, "redeclare failed: %v\n", err)
	fmt.Fprintf(out, "  errors.Is(err, leveret.ErrPreconditionFailed) = true\n")
	fmt.Fprintf(out, "  code %d (%v), class %d method %d\n", ce.Code, ce.Code, ce.ClassID, ce.MethodID)
	fmt.Fprintf(out, "  text %q\n", ce.Text)

	if first.Err() != nil || behind.Err() != nil {
		return fmt.Errorf("only the redeclare should fail: first %v, behind %v", first.Err(), behind.Err())
	}
	fmt.Fprintln(out, "the first declare and the passive declare issued behind the failure both succeeded")
	return nil
}

// notFound publishes to a missing exchange on an explicit channel.
func notFound(ctx context.Context, c *leveret.Client, out io.Writer, queue string, n int) (err error) {
	fmt.Fprintln(out, "== 2. publish to a missing exchange on an explicit channel")
	ch, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ch.Close(ctx)) }()

	// The publish itself succeeds: it was written, and the broker does not
	// answer a publish. Its failure closes the channel.
	pub := ch.Publish(ctx, ops.Publish{Exchange: "no-such-exchange", RoutingKey: "x", Message: ops.Message{Body: []byte("lost")}})
	later := make([]*leveret.Promise[ops.QueueDeclareOk], n)
	for i := range later {
		later[i] = ch.QueueDeclare(ops.QueueDeclare{Queue: queue, Passive: true})
	}
	if _, err := pub.Wait(ctx); err != nil {
		return fmt.Errorf("the publish itself should not fail: %w", err)
	}
	fmt.Fprintln(out, "publish returned no error (it was written; the broker does not answer publishes)")

	for i, p := range later {
		_, err := p.Wait(ctx)
		if !errors.Is(err, leveret.ErrNotFound) || !errors.Is(err, leveret.ErrNotExecuted) {
			return fmt.Errorf("operation %d behind the publish: got %v, want not executed because of 404", i+1, err)
		}
		fmt.Fprintf(out, "operation %d behind it: %v\n", i+1, err)
	}
	if n > 0 {
		fmt.Fprintln(out, "  errors.Is(err, leveret.ErrNotFound) = true, errors.Is(err, leveret.ErrNotExecuted) = true")
	}

	select {
	case <-ch.Done():
	case <-ctx.Done():
		return fmt.Errorf("waiting for the channel to end: %w", ctx.Err())
	}
	var ce *leveret.ChannelError
	if !errors.As(ch.Err(), &ce) || ce.Code != 404 {
		return fmt.Errorf("channel error: got %v, want a 404 *leveret.ChannelError", ch.Err())
	}
	fmt.Fprintf(out, "ch.Err(): %v\n", ch.Err())
	fmt.Fprintf(out, "  code %d (%v), text %q\n", ce.Code, ce.Code, ce.Text)
	return nil
}

// stillWorking shows the connection survived both channel errors.
func stillWorking(ctx context.Context, c *leveret.Client, out io.Writer, queue string) error {
	fmt.Fprintln(out, "== 3. the client keeps working")
	// A client-level Get goes out once the client-level publish routed to
	// its queue has been confirmed, so the Get sees the message.
	pub := c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte("still here")}})
	get := c.Get(ops.Get{Queue: queue, NoAck: true})
	if err := leveret.WaitAll(ctx, pub, get); err != nil {
		return err
	}
	g, _ := get.Value()
	if g.Empty() {
		return errors.New("the queue was empty after publishing to it")
	}
	fmt.Fprintf(out, "client-level publish and get: %q\n", g.Delivery.Body)

	ch, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	ok, err := ch.QueueDeclare(ops.QueueDeclare{Queue: queue, Passive: true}).Wait(ctx)
	if err != nil {
		return errors.Join(err, ch.Close(ctx))
	}
	fmt.Fprintf(out, "a new channel works: queue %s has %d messages\n", ok.Queue, ok.MessageCount)
	if err := ch.Close(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "client error: %v\n", c.Err())
	return nil
}
