package tx_test

import (
	"context"
	"log"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
	"github.com/leveret-mq/leveret/tx"
)

// Move a message from one queue to another: the ack and the publish take
// effect together, or not at all.
func ExampleTx_Commit() {
	ctx := context.Background()
	c, err := leveret.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	t, err := tx.New(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close(ctx)

	g, err := t.Channel().Get(ops.Get{Queue: "inbox"}).Wait(ctx)
	if err != nil || g.Empty() {
		return
	}
	t.Publish(ctx, ops.Publish{RoutingKey: "archive", Message: g.Delivery.Message})
	t.Ack(g.Delivery)
	if _, err := t.Commit().Wait(ctx); err != nil {
		log.Fatal(err)
	}
}
