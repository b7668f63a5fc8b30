package leveret_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
)

// countingPolicy waits 1 ms between rounds and counts its calls.
type countingPolicy struct{ nexts, resets atomic.Int32 }

func (p *countingPolicy) Next() (time.Duration, bool) { p.nexts.Add(1); return time.Millisecond, true }
func (p *countingPolicy) Reset()                      { p.resets.Add(1) }

// TestRecoveryPolicyResetOnlyAfterServing (issue 23, §1): connections that
// die right after their recovery never start the reconnect policy over,
// so a refusal that closes each new connection backs off instead of
// storming (before, the policy was reset after every recovery: 63 drops in
// 5 s). A connection that served a second, or that the broker closed with
// 320 CONNECTION_FORCED after recovering, does start it over and is
// redialled at once. EventReconnecting says why the attempt before failed.
func TestRecoveryPolicyResetOnlyAfterServing(t *testing.T) {
	leakCheck(t)
	const quick = 20 // connections that die at once
	policy := &countingPolicy{}
	type snap struct{ nexts, resets int32 }
	starts := make(chan snap, quick+8)
	var conns atomic.Int32
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ForgetEnded: true}, func(c *fakeserver.Conn) {
		n := conns.Add(1)
		starts <- snap{policy.nexts.Load(), policy.resets.Load()}
		switch {
		case n == 1, n > quick+3:
			c.Serve()
		case n <= quick+1:
			// dies at once
		case n == quick+2:
			time.Sleep(stableFor) // serves, then drops
		case n == quick+3:
			time.Sleep(300 * time.Millisecond) // recovered by then, well under a second
			c.Send(0, &proto.ConnectionClose{ReplyCode: uint16(proto.ConnectionForced), ReplyText: "CONNECTION_FORCED - closed by an operator"})
			readUntilClose(c)
		}
	})
	var mu sync.Mutex
	var reconnecting []leveret.Event
	c := dial(t, s, leveret.WithReconnect(policy), leveret.WithEventHandler(func(e leveret.Event) {
		if e.Kind == leveret.EventReconnecting {
			mu.Lock()
			reconnecting = append(reconnecting, e)
			mu.Unlock()
		}
	}))
	receive(t, starts, "the first connection")
	atDial := policy.resets.Load()
	s.Conns()[0].Close() // connection 1 drops; the next ones die at once
	var last snap
	for i := 2; i <= quick+1; i++ {
		last = receive(t, starts, "a connection")
	}
	require.Equal(t, atDial, last.resets, "the policy was reset after connections that died right after recovery")
	served := receive(t, starts, "the connection that serves")
	require.Equal(t, atDial, served.resets)
	forced := receive(t, starts, "the connection after it")
	require.Equal(t, atDial+1, forced.resets, "reset once the connection had served")
	require.Equal(t, served.nexts, forced.nexts, "redialled at once after a connection that served")
	after := receive(t, starts, "the connection after the forced close")
	require.Equal(t, atDial+2, after.resets, "reset after 320 CONNECTION_FORCED")
	require.Equal(t, forced.nexts, after.nexts, "redialled at once after 320 CONNECTION_FORCED")

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, reconnecting)
	for _, e := range reconnecting {
		require.Error(t, e.Err, "EventReconnecting attempt %d says why the one before failed", e.Attempt)
	}
	require.NoError(t, c.Err())
}

// stableFor is comfortably over the time a connection must serve for its
// loss to reset the reconnect policy (one second).
const stableFor = 1500 * time.Millisecond
