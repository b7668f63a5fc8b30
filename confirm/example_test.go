package confirm_test

import (
	"context"
	"fmt"
	"log"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/ops"
)

// Publish many messages, then wait for every outcome.
func ExamplePublisher_Publish() {
	ctx := context.Background()
	c, err := leveret.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	p, err := confirm.New(ctx, c, confirm.WithWindow(500))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)

	ps := make([]*leveret.Promise[confirm.Outcome], 10_000)
	for i := range ps {
		ps[i] = p.Publish(ctx, ops.Publish{RoutingKey: "jobs", Mandatory: true,
			Message: ops.Message{Body: fmt.Appendf(nil, "job %d", i)}})
	}
	for i, pr := range ps {
		o, err := pr.Wait(ctx)
		switch {
		case err != nil: // the channel or connection ended: delivered or not, nobody knows
			log.Printf("job %d: %v", i, err)
		case o.Status != confirm.Acked: // nacked, or returned with o.Return
			log.Printf("job %d: %v", i, o)
		}
	}
}

// One message, one call.
func ExamplePublisher_PublishSync() {
	ctx := context.Background()
	c, err := leveret.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	p, err := confirm.New(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)

	o, err := p.PublishSync(ctx, ops.Publish{RoutingKey: "jobs", Message: ops.Message{Body: []byte("one")}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(o.Status)
}
