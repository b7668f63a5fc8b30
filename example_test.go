package leveret_test

// Runnable examples: go test runs them against the broker at $AMQP_URL
// (default: the local test broker that make test starts). Queues are
// server-named and exclusive, so they vanish with the connection.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// exampleClient dials the broker or stops the example.
func exampleClient(ctx context.Context) *leveret.Client {
	c, err := leveret.Dial(ctx, brokerURL(), leveret.WithConnectionName("leveret-example"))
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// tempQueue declares a server-named exclusive queue and returns its name.
func tempQueue(ctx context.Context, c *leveret.Client) string {
	q, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	return q.Queue
}

func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := leveret.Dial(ctx, brokerURL(), leveret.WithConnectionName("billing"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	fmt.Println("connected to", c.ServerProperties()["product"])
	// Output: connected to RabbitMQ
}

// Topology is issued at once and waited for once: the declarations and the
// binding pipeline, the binding going out after the declarations it names.
func ExampleWaitAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exampleClient(ctx)
	defer c.Close(ctx)

	x := fmt.Sprintf("example.events.%d", time.Now().UnixNano())
	exchange := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: x, Kind: ops.Topic, AutoDelete: true})
	queue := c.QueueDeclare(ops.QueueDeclare{Queue: x + ".audit", Exclusive: true})
	binding := c.QueueBind(ops.QueueBind{Queue: x + ".audit", Exchange: x, RoutingKey: "#"})
	if err := leveret.WaitAll(ctx, exchange, queue, binding); err != nil {
		log.Fatal(err)
	}
	fmt.Println("topology ready")
	// Output: topology ready
}

// Client-level declarations spread over the client's channels and are
// collected in order.
func ExampleClient_QueueDeclare() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exampleClient(ctx)
	defer c.Close(ctx)

	var ps []*leveret.Promise[ops.QueueDeclareOk]
	for range 3 {
		ps = append(ps, c.QueueDeclare(ops.QueueDeclare{Exclusive: true}))
	}
	oks, err := leveret.Collect(ctx, ps)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(oks), "queues declared, each empty:", oks[0].MessageCount == 0)
	// Output: 3 queues declared, each empty: true
}

// On an explicit channel operations share its fate: what was issued
// behind a failing operation was discarded by the broker.
func ExampleClient_Channel() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exampleClient(ctx)
	defer c.Close(ctx)

	ch, err := c.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	missing := ch.QueueDeclare(ops.QueueDeclare{Queue: "example.no-such-queue", Passive: true})
	behind := ch.QueueDeclare(ops.QueueDeclare{Exclusive: true})

	_, err = missing.Wait(ctx)
	var ce *leveret.ChannelError
	if errors.As(err, &ce) {
		fmt.Println("failed:", ce.Code, ce.Method())
	}
	_, err = behind.Wait(ctx)
	fmt.Println("behind it, not executed:", errors.Is(err, leveret.ErrNotExecuted))
	fmt.Println("the channel ended:", errors.Is(ch.Err(), leveret.ErrNotFound))
	// Output:
	// failed: NOT_FOUND queue.declare
	// behind it, not executed: true
	// the channel ended: true
}

// Client.Publish settles when the broker has confirmed the message; a
// publish the broker refuses fails alone, with its own error.
func ExampleClient_Publish() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exampleClient(ctx)
	defer c.Close(ctx)
	q := tempQueue(ctx, c)

	ok := c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{ContentType: "text/plain", Body: []byte("hello")}})
	typo := c.Publish(ctx, ops.Publish{Exchange: "example.no-such-exchange", Message: ops.Message{Body: []byte("lost?")}})
	returned := c.Publish(ctx, ops.Publish{RoutingKey: "example.nobody", Mandatory: true, Message: ops.Message{Body: []byte("back")}})

	_, err := ok.Wait(ctx)
	fmt.Println("confirmed:", err == nil)
	_, err = typo.Wait(ctx)
	fmt.Println("typo:", errors.Is(err, leveret.ErrNotFound))
	_, err = returned.Wait(ctx)
	var re *leveret.ReturnedError
	fmt.Println("returned:", errors.As(err, &re) && errors.Is(err, leveret.ErrNoRoute))
	// Output:
	// confirmed: true
	// typo: true
	// returned: true
}

// A consumer reads its deliveries with for range and acks each; Shutdown
// stops it once what it received is acked.
func ExampleClient_Consume() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exampleClient(ctx)
	defer c.Close(ctx)
	q := tempQueue(ctx, c)
	for _, job := range []string{"resize", "upload", "notify"} {
		c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte(job)}})
	}

	cs, err := c.Consume(ops.Consume{Queue: q, Prefetch: 10}).Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	done := 0
	for d := range cs.Deliveries() {
		fmt.Println("job", string(d.Body))
		d.Ack()
		if done++; done == 3 {
			break
		}
	}
	if err := cs.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("stopped")
	// Output:
	// job resize
	// job upload
	// job notify
	// stopped
}

// Get fetches one message; its delivery is acked on the channel it came
// from, which no unrelated failure can close.
func ExampleClient_Get() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exampleClient(ctx)
	defer c.Close(ctx)
	q := tempQueue(ctx, c)
	c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("one")}})

	g, err := c.Get(ops.Get{Queue: q}).Wait(ctx) // sees the publish: it waits for its confirm
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("got", string(g.Delivery.Body))
	if _, err := g.Delivery.Ack().Wait(ctx); err != nil {
		log.Fatal(err)
	}
	g, err = c.Get(ops.Get{Queue: q}).Wait(ctx)
	fmt.Println("then empty:", err == nil && g.Empty())
	// Output:
	// got one
	// then empty: true
}
