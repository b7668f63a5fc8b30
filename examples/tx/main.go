// Tx shows an AMQP transaction with leveret's tx package: it publishes
// three messages and rolls them back, publishes two and commits them, and
// shows that the queue holds exactly the two committed messages.
//
// A transaction's publishes reach their queues only when it commits;
// Commit and Rollback return promises and are barriers on their channel.
//
//	AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ go run ./examples/tx [-rollback 3] [-commit 2]
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
	"github.com/leveret-mq/leveret/tx"
)

var (
	rolledBack = flag.Int("rollback", 3, "messages to publish and roll back (0-1000)")
	committed  = flag.Int("commit", 2, "messages to publish and commit (0-1000)")
)

func main() {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, brokerURL(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tx:", err)
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
	nBack, nCommit := *rolledBack, *committed
	if nBack < 0 || nBack > 1000 || nCommit < 0 || nCommit > 1000 {
		return fmt.Errorf("-rollback %d or -commit %d out of range", nBack, nCommit)
	}
	c, err := leveret.Dial(ctx, url, leveret.WithConnectionName("leveret example tx"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close(ctx)) }()

	// Exclusive: the queue belongs to this connection and goes with it.
	q, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	if err != nil {
		return err
	}
	t, err := tx.New(ctx, c)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, t.Close(ctx)) }()

	publish := func(n int, what string) {
		for i := range n {
			t.Publish(ctx, ops.Publish{RoutingKey: q.Queue, Message: ops.Message{Body: fmt.Appendf(nil, "%s %d", what, i+1)}})
		}
	}

	publish(nBack, "rolled back")
	if _, err := t.Rollback().Wait(ctx); err != nil {
		return err
	}
	held, err := count(ctx, c, q.Queue)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "published %d and rolled back: the queue holds %d\n", nBack, held)

	publish(nCommit, "committed")
	if _, err := t.Commit().Wait(ctx); err != nil {
		return err
	}
	if held, err = count(ctx, c, q.Queue); err != nil {
		return err
	}
	fmt.Fprintf(out, "published %d and committed: the queue holds %d\n", nCommit, held)
	if held != uint32(nCommit) {
		return fmt.Errorf("the queue holds %d messages, want %d", held, nCommit)
	}
	return nil
}

// count is the number of messages ready in queue (a passive declare).
func count(ctx context.Context, c *leveret.Client, queue string) (uint32, error) {
	ok, err := c.QueueDeclare(ops.QueueDeclare{Queue: queue, Passive: true}).Wait(ctx)
	return ok.MessageCount, err
}
