package leveret_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
)

// TestBackoffDelays: each delay is drawn from [d/2, d] for d doubling from
// Initial and capped at Max; MaxAttempts ends it; Reset starts over.
func TestBackoffDelays(t *testing.T) {
	b := &leveret.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, MaxAttempts: 6}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for round := range 2 {
		for i, ms := range want {
			d, ok := b.Next()
			require.True(t, ok, "round %d attempt %d", round, i)
			hi := ms * time.Millisecond
			assert.GreaterOrEqual(t, d, hi/2, "attempt %d", i)
			assert.LessOrEqual(t, d, hi, "attempt %d", i)
		}
		_, ok := b.Next()
		assert.False(t, ok, "gives up after MaxAttempts")
		b.Reset()
	}
	var def leveret.Backoff // zero value: 100 ms doubling to 1 s, no limit: at most two dials a second
	var last time.Duration
	for range 40 {
		d, ok := def.Next()
		require.True(t, ok)
		require.LessOrEqual(t, d, time.Second)
		last = d
	}
	assert.GreaterOrEqual(t, last, 500*time.Millisecond, "capped at Max, not below Max/2")
}
