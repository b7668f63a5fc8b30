package leveret

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPromiseSettleOnce(t *testing.T) {
	p := newPromise[int]()
	require.ErrorIs(t, p.Err(), ErrPending)
	v, ok := p.Value()
	require.False(t, ok)
	require.Zero(t, v)
	select {
	case <-p.Done():
		t.Fatal("Done closed before settling")
	default:
	}

	p.resolve(7, nil)
	p.resolve(8, errors.New("late")) // ignored
	v, err := p.Wait(context.Background())
	require.NoError(t, err)
	require.Equal(t, 7, v)
	v, ok = p.Value()
	require.True(t, ok)
	require.Equal(t, 7, v)
	<-p.Done()
}

func TestPromiseWaitHonoursContext(t *testing.T) {
	p := newPromise[string]()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := p.Wait(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	p.resolve("", errors.New("boom"))
	_, err = p.Wait(context.Background())
	require.EqualError(t, err, "boom", "a wait after an abandoned one still sees the result")
}

// Waiters that arrive before, during and after settlement all wake: the
// done channel is made lazily, so this is where a lost wake-up would hide.
func TestPromiseEarlyWaitersRace(t *testing.T) {
	for range 2000 {
		p := newPromise[int]()
		var wg sync.WaitGroup
		got := make([]int, 4)
		for i := range got {
			wg.Go(func() {
				if i%2 == 0 {
					<-p.Done()
					got[i] = p.val
					return
				}
				v, err := p.Wait(context.Background())
				if err == nil {
					got[i] = v
				}
			})
		}
		wg.Go(func() { p.resolve(42, nil) })
		wg.Wait()
		assert.Equal(t, []int{42, 42, 42, 42}, got)
	}
}

func TestWaitAllAndAny(t *testing.T) {
	ctx := context.Background()
	a, b := newPromise[int](), newPromise[string]()
	boom := errors.New("boom")
	go func() {
		b.resolve("", boom)
		a.resolve(1, nil)
	}()
	require.ErrorIs(t, WaitAll(ctx, a, b), boom)

	c := newPromise[int]()
	i, err := WaitAny(ctx, c, settled(2, nil))
	require.NoError(t, err)
	require.Equal(t, 1, i)

	vals, err := Collect(ctx, []*Promise[int]{settled(1, nil), settled(2, nil)})
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, vals)

	short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	i, err = WaitAny(short, c)
	require.Equal(t, -1, i)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
