package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
)

// TestFrameMaxFloor: frame_max 4096 (the protocol's minimum) on the real
// broker. RabbitMQ 4.1 and later refuse frames below 8192 (the broker hangs
// up after connection.tune-ok; only its log says why): Dial fails at once
// with an error that names the floor, however long its ctx, and does not
// redial. RabbitMQ 3.10 and 4.0 accept it, and the client then uses it.
func TestFrameMaxFloor(t *testing.T) {
	probe := dial(t)
	version, _ := probe.ServerProperties()["version"].(string)
	refuses := versionAtLeast(version, 4, 1)
	for _, how := range []string{"WithFrameMax", "?frame_max="} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			url, opts := amqpURL(), []leveret.Option{leveret.WithFrameMax(4096)}
			if how != "WithFrameMax" {
				url, opts = withQuery(url, "frame_max=4096"), nil
			}
			start := time.Now()
			c, err := leveret.Dial(ctx, url, opts...)
			if !refuses {
				require.NoError(t, err, "RabbitMQ %s accepts frame_max 4096", version)
				require.Equal(t, uint32(4096), c.FrameMax())
				require.NoError(t, c.Close(ctx))
				return
			}
			require.Error(t, err, "RabbitMQ %s refuses frame_max 4096", version)
			require.ErrorContains(t, err, fmt.Sprintf("frame_max 4096 is below 8192, the smallest RabbitMQ %s accepts", version))
			require.False(t, errors.Is(err, context.DeadlineExceeded), "Dial redialled until its ctx ended")
			t.Logf("RabbitMQ %s: Dial failed after %v: %v", version, time.Since(start).Round(time.Millisecond), err)
		})
	}
}

// withQuery adds a query parameter to an AMQP URL.
func withQuery(url, param string) string {
	for _, c := range url {
		if c == '?' {
			return url + "&" + param
		}
	}
	return url + "?" + param
}
