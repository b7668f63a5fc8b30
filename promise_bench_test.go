package leveret

import (
	"context"
	"sync"
	"testing"
)

// BenchmarkPromiseRoundTrip is the cost every operation pays for its
// promise: issue, settle, and a Wait that finds it settled.
func BenchmarkPromiseRoundTrip(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p := newPromise[struct{}]()
		p.resolve(struct{}{}, nil)
		if _, err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewPromise is the same round trip through the exported
// constructor that packages built on leveret (confirm, tx) use.
func BenchmarkNewPromise(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, settle := NewPromise[uint64]()
		settle(1, nil)
		if v, err := p.Wait(ctx); err != nil || v != 1 {
			b.Fatal(v, err)
		}
	}
}

// BenchmarkPromiseCrossGoroutine settles each promise on another goroutine
// while the issuer blocks in Wait, as a caller waiting for a reply does.
func BenchmarkPromiseCrossGoroutine(b *testing.B) {
	ctx := context.Background()
	work := make(chan *Promise[struct{}])
	var wg sync.WaitGroup
	// Owner: this benchmark; exits when work is closed below.
	wg.Go(func() {
		for p := range work {
			p.resolve(struct{}{}, nil)
		}
	})
	b.ReportAllocs()
	for b.Loop() {
		p := newPromise[struct{}]()
		work <- p
		if _, err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
}

// BenchmarkWaitAll1000 waits for 1,000 settled promises of one type, as
// after a burst of pipelined declares.
func BenchmarkWaitAll1000(b *testing.B) {
	ctx := context.Background()
	ps := make([]*Promise[struct{}], 1000)
	for i := range ps {
		ps[i] = newPromise[struct{}]()
		ps[i].resolve(struct{}{}, nil)
	}
	ws := Waiters(ps)
	b.ReportAllocs()
	for b.Loop() {
		if err := WaitAll(ctx, ws...); err != nil {
			b.Fatal(err)
		}
	}
}
