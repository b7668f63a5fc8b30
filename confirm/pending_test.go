package confirm

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// result records how a slot was settled.
type result struct {
	calls int
	o     Outcome
	err   error
}

func pushN(t *testing.T, p *pending, n int) []*result {
	t.Helper()
	rs := make([]*result, n)
	for i := range rs {
		r := &result{}
		rs[i] = r
		seq := p.push(func(o Outcome, err error) { r.calls++; r.o, r.err = o, err })
		require.Equal(t, p.next-1, seq)
	}
	return rs
}

func TestConfirmPendingMultipleSettlesRange(t *testing.T) {
	p := newPending()
	rs := pushN(t, &p, 10)
	assert.Equal(t, 4, p.settle(4, true, Acked))
	for i, r := range rs {
		if i < 4 {
			assert.Equal(t, 1, r.calls, "publish %d", i+1)
			assert.Equal(t, Acked, r.o.Status)
		} else {
			assert.Zero(t, r.calls, "publish %d", i+1)
		}
	}
	assert.Equal(t, uint64(5), p.lowestOpen())
	assert.Equal(t, 6, p.settle(10, true, Nacked))
	assert.Equal(t, Nacked, rs[9].o.Status)
	assert.Equal(t, uint64(11), p.lowestOpen())
	assert.Zero(t, p.n)
	assert.Zero(t, p.settle(3, true, Acked), "a tag already settled")
}

func TestConfirmPendingSingleOutOfOrder(t *testing.T) {
	p := newPending()
	rs := pushN(t, &p, 5)
	assert.Equal(t, 1, p.settle(3, false, Acked))
	assert.Equal(t, 1, rs[2].calls)
	assert.Equal(t, uint64(1), p.lowestOpen(), "the front is still open")
	assert.Zero(t, p.settle(3, false, Acked), "settled twice")
	assert.Equal(t, 1, p.settle(1, false, Nacked))
	assert.Equal(t, uint64(2), p.lowestOpen())
	assert.Equal(t, 1, p.settle(2, false, Acked))
	assert.Equal(t, uint64(4), p.lowestOpen(), "3 was settled earlier and is popped with 2")
	// A multiple ack over a range with a hole already settled counts only the rest.
	assert.Equal(t, 2, p.settle(5, true, Acked))
	for i, r := range rs {
		assert.Equal(t, 1, r.calls, "publish %d", i+1)
	}
}

func TestConfirmPendingReturnAttached(t *testing.T) {
	p := newPending()
	rs := pushN(t, &p, 3)
	ret := &ops.Return{ReplyCode: 312, ReplyText: "NO_ROUTE"}
	p.attach(2, ret)
	p.settle(3, true, Acked)
	assert.Equal(t, Acked, rs[0].o.Status)
	assert.Equal(t, Returned, rs[1].o.Status)
	assert.Same(t, ret, rs[1].o.Return)
	assert.Nil(t, rs[2].o.Return)
}

func TestConfirmPendingFailAllAndDrop(t *testing.T) {
	p := newPending()
	rs := pushN(t, &p, 4)
	p.settle(2, false, Acked)
	seq := p.next - 1
	require.True(t, p.dropNewest(seq))
	assert.False(t, p.dropNewest(seq), "already dropped")
	assert.Equal(t, seq, p.next, "the number is reused")
	cause := errors.New("gone")
	assert.Equal(t, 2, p.failAll(notConfirmed(cause)))
	assert.ErrorIs(t, rs[0].err, cause)
	assert.ErrorIs(t, rs[0].err, ErrNotConfirmed)
	assert.NoError(t, rs[1].err)
	assert.Zero(t, rs[3].calls, "dropped: the caller settles it")
	assert.Zero(t, p.n)
	assert.Zero(t, p.settle(3, true, Acked), "after failAll")
}

// The ring grows past its first size and wraps around while keeping order.
func TestConfirmPendingGrowAndWrap(t *testing.T) {
	p := newPending()
	var all []*result
	for round := range 50 {
		all = append(all, pushN(t, &p, 37+round)...)
		// Settle all but the newest few, alternately single and multiple.
		low := p.lowestOpen()
		upTo := p.next - 3
		if round%2 == 0 {
			for tag := upTo; tag >= low; tag-- {
				p.settle(tag, false, Acked)
			}
		} else {
			p.settle(upTo, true, Acked)
		}
		require.Equal(t, upTo+1, p.lowestOpen(), "round %d", round)
		require.Equal(t, 2, p.n)
	}
	p.settle(p.next-1, true, Acked)
	for i, r := range all {
		require.Equal(t, 1, r.calls, "publish %d", i+1)
		require.Equal(t, Acked, r.o.Status)
	}
	assert.LessOrEqual(t, len(p.buf), 128, "the ring holds a window, not the history")
}

// Settling a range costs the range, not the window: the multiple ack of
// one entry at the front of a large window touches one slot.
func BenchmarkPendingSlidingWindow(b *testing.B) {
	p := newPending()
	noop := func(Outcome, error) {}
	for range 1000 {
		p.push(noop)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.push(noop)
		p.settle(p.first, true, Acked)
	}
}
