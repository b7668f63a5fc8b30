// Package tests holds leveret's integration tests. They run against a real
// RabbitMQ broker at $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f;
// `scripts/broker.sh up` starts one) and use `rabbitmqctl` to inspect it. They
// fail, never skip, when the broker is missing.
package tests

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
)

func TestMain(m *testing.M) {
	if err := checkBroker(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: no RabbitMQ broker answers at %s: %v\n"+
			"Start one with `scripts/broker.sh up` or set AMQP_URL. These tests need a broker and do not skip.\n",
			redactedURL(), err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// checkBroker dials the broker once, with a 10 s limit, and closes again.
func checkBroker() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := leveret.Dial(ctx, amqpURL())
	if err != nil {
		return err
	}
	return c.Close(ctx)
}
