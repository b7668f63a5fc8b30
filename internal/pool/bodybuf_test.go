package pool

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/ops"
)

// TestBodyClass: a pooled buffer is the smallest power of two that holds
// the body; small and huge bodies are not pooled.
func TestBodyClass(t *testing.T) {
	for _, c := range []struct{ n, class int }{
		{0, -1}, {16<<10 - 1, -1}, {16 << 10, 0}, {16<<10 + 1, 1}, {32 << 10, 1},
		{1 << 20, 6}, {1<<20 + 1, 7}, {16 << 20, 10}, {16<<20 + 1, -1},
	} {
		require.Equal(t, c.class, bodyClass(c.n), "body of %d bytes", c.n)
	}
}

// TestCopyBody: the copy is equal, private and of the body's length, and
// a released buffer is only handed out again for a body of its class.
func TestCopyBody(t *testing.T) {
	for _, n := range []int{0, 100, 16 << 10, 100_000, 1 << 20, 16<<20 + 5} {
		body := bytes.Repeat([]byte{7}, n)
		cp, buf := copyBody(body)
		require.True(t, bytes.Equal(body, cp))
		require.Len(t, cp, n)
		require.Equal(t, bodyClass(n) >= 0, buf != nil, "pooled for %d bytes", n)
		if n > 0 {
			cp[0] = 8
			require.Equal(t, byte(7), body[0], "the copy is private")
		}
		if buf != nil {
			require.Equal(t, 1<<(minPooledShift+bodyClass(n)), cap(*buf))
			ReleaseBody(buf)
		}
	}
	ReleaseBody(nil) // no buffer: nothing to give back
}

// TestPublishCostsItsBuffer: WithUnconfirmedLimit counts the memory a
// publish holds, which for a pooled body is its whole buffer.
func TestPublishCostsItsBuffer(t *testing.T) {
	for _, c := range []struct{ body, held int }{{20 << 10, 32 << 10}, {1 << 20, 1 << 20}} {
		var pub Publish
		pub.Init(&ops.Publish{Message: ops.Message{Body: make([]byte, c.body)}}, nil)
		require.Equal(t, c.held+pubCostOverhead, pub.cost, "body of %d bytes", c.body)
		require.Len(t, pub.msg.Body, c.body)
		require.NotNil(t, pub.buf)
	}
	var small Publish
	small.Init(&ops.Publish{Message: ops.Message{Body: make([]byte, 100)}}, nil)
	require.Nil(t, small.buf)
	require.LessOrEqual(t, small.cost, 128+pubCostOverhead, "a small copy is its own allocation")
}
