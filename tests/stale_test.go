package tests

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// TestStaleDeliveriesNotHandedOver (issue 23, §3): 300 messages, prefetch
// 50, 10 ms of work each, one forced close. The deliveries still buffered
// at the drop are dropped (the broker delivers them again), not handed to
// the application: at most the one it was working on, and one a hand-over
// had under way, are processed twice. Before, all 50 buffered were.
func TestStaleDeliveriesNotHandedOver(t *testing.T) {
	for _, own := range []bool{true, false} {
		name := "Client.Consume"
		if !own {
			name = "Channel.Consume"
		}
		t.Run(name, func(t *testing.T) {
			ctx, conn, queue, log, c := recoverySetup(t, 2*opTimeout)
			const total, prefetch = 300, 50
			var ps []leveret.Waiter
			for i := range total {
				ps = append(ps, c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(strconv.Itoa(i))}}))
			}
			require.NoError(t, leveret.WaitAll(ctx, ps...))
			var cs *leveret.Consumer
			var err error
			if own {
				cs, err = c.Consume(ops.Consume{Queue: queue, Prefetch: prefetch}).Wait(ctx)
			} else {
				ch, cerr := c.Channel(ctx)
				require.NoError(t, cerr)
				cs, err = ch.Consume(ops.Consume{Queue: queue, Prefetch: prefetch}).Wait(ctx)
			}
			require.NoError(t, err)
			processed := make(map[int]int)
			twice := 0
			for len(processed) < total {
				select {
				case d, ok := <-cs.Deliveries():
					require.True(t, ok, "the consumer ended: %v", cs.Err())
					id, _ := strconv.Atoi(string(d.Body))
					if processed[id]++; processed[id] > 1 {
						twice++
					}
					time.Sleep(10 * time.Millisecond) // the work
					d.Ack()
					if len(processed) == 100 && len(log.of(leveret.EventDisconnected)) == 0 {
						forceClose(t, conn)
					}
				case <-ctx.Done():
					t.Fatalf("processed %d of %d", len(processed), total)
				}
			}
			require.Len(t, log.of(leveret.EventRecovered), 1)
			t.Logf("%d messages processed twice after one forced close with %d buffered", twice, prefetch)
			require.LessOrEqual(t, twice, 2, "messages processed twice")
		})
	}
}
