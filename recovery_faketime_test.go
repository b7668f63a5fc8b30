package leveret_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// In fake time (testing/synctest, an in-memory broker), the timers of a
// recovery keep their schedule exactly: after a forced close the client
// redials at once; a Client.Consume consumer whose queue is missing is
// tried again 100, 200 and 400 ms after each refusal (consumerretry.go),
// reported each time, and resumes on the fourth try, 700 ms after the
// recovery, on the same Deliveries channel.
func TestRecoveryTimersInFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := 0
		b := &fakeserver.Broker{Refuse: func(n int, _ uint16, m proto.Method) proto.Method {
			if _, ok := m.(*proto.BasicConsume); ok && n == 2 && refused < 3 {
				refused++
				return &proto.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'q'", ClassID: 60, MethodID: 20}
			}
			return nil
		}}
		s := fakeserver.InMemory(t, fakeserver.Options{}, b.Serve)
		events := make(chan leveret.Event, 64)
		c, err := leveret.Dial(context.Background(), s.URL(), leveret.WithDialer(s.Dial),
			leveret.WithEventHandler(func(e leveret.Event) { events <- e }))
		require.NoError(t, err)
		cs, err := c.Consume(ops.Consume{Queue: "q", ConsumerTag: "c"}).Wait(context.Background())
		require.NoError(t, err)

		start := time.Now()
		require.NoError(t, s.Conns()[0].Send(0, &proto.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"}))
		var delays []time.Duration
		var reconnectDelay time.Duration = -1
		for len(delays) < 3 {
			e := <-events
			switch e.Kind {
			case leveret.EventReconnecting:
				reconnectDelay = e.Delay
			case leveret.EventConsumerRefused:
				require.ErrorIs(t, e.Err, leveret.ErrNotFound)
				require.Equal(t, len(delays)+1, e.Attempt)
				delays = append(delays, e.Delay)
			}
		}
		require.Zero(t, reconnectDelay, "the redial after a forced close waits")
		require.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, delays)

		// The fourth start, 400 ms after the third refusal, works.
		time.Sleep(400 * time.Millisecond)
		synctest.Wait()
		conn2 := s.Conns()[1]
		require.Equal(t, []string{"c"}, b.Consumers(conn2))
		require.Equal(t, 700*time.Millisecond, time.Since(start), "resumed off schedule")
		n, err := b.DeliverToAll(conn2, "after")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		d := <-cs.Deliveries()
		require.Equal(t, "after", string(d.Body))
		require.NoError(t, cs.Err())
		require.NoError(t, c.Close(context.Background()))
	})
}
