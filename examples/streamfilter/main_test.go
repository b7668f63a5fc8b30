package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example runs against the broker at AMQP_URL with its defaults.
// RabbitMQ 3.10 has streams but no stream filtering (it came with 3.13):
// the test says so and skips there; make test runs it on 4.x too.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, brokerURL(), &out)
	if errors.Is(err, errNoStreamFilter) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
}
