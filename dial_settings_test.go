package leveret_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
)

// A frame_max RabbitMQ 4.1 and later refuse (below 8192; the broker hangs
// up after tune-ok and only its log says why) ends Dial at once with a
// message that says so, however long its ctx, and is not redialled.
// Before, Dial redialled until its ctx ended ("context deadline exceeded").
// The same frame_max is fine on an older RabbitMQ.
func TestDialFrameMaxBelowTheBrokersFloor(t *testing.T) {
	leakCheck(t)
	var conns atomic.Int32
	s := fakeserver.StartWith(t, fakeserver.Options{Product: "RabbitMQ", Version: "4.3.6", ReadTimeout: time.Second},
		func(c *fakeserver.Conn) { conns.Add(1); c.Serve() })
	for _, dial := range []func(ctx context.Context) error{
		func(ctx context.Context) error {
			_, err := leveret.Dial(ctx, s.URL(), leveret.WithFrameMax(4096))
			return err
		},
		func(ctx context.Context) error { _, err := leveret.Dial(ctx, s.URL()+"?frame_max=4096"); return err },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		err := dial(ctx)
		cancel()
		require.Error(t, err)
		require.Less(t, time.Since(start), 10*time.Second, "Dial redialled")
		require.ErrorContains(t, err, "frame_max 4096 is below 8192, the smallest RabbitMQ 4.3.6 accepts")
		require.False(t, errors.Is(err, context.DeadlineExceeded))
	}
	require.Zero(t, conns.Load(), "a handshake went through")

	old := fakeserver.StartWith(t, fakeserver.Options{Product: "RabbitMQ", Version: "3.10.8", ReadTimeout: time.Second}, nil)
	c, err := leveret.Dial(waitCtx(t), old.URL(), leveret.WithFrameMax(4096))
	require.NoError(t, err)
	require.Equal(t, uint32(4096), c.FrameMax())
	require.NoError(t, closeClient(t, c))
}
