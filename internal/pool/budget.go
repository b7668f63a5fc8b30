package pool

import (
	"context"
	"sync"
)

// pubBudget bounds the bytes held by unconfirmed client-level publishes
// (their private copies). Publish waits for room, honouring its ctx.
type pubBudget struct {
	mu    sync.Mutex
	limit int
	used  int
	room  chan struct{} // closed when room frees up; nil if nobody waits
}

// acquire takes n bytes, waiting until ctx ends. A publish larger than the
// whole limit goes alone.
func (b *pubBudget) acquire(ctx context.Context, n int) error {
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.limit {
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.mu.Lock()
	}
	b.used += n
	b.mu.Unlock()
	return nil
}

// release gives n bytes back. Waiters wake once a sixteenth of the limit
// is free, so that one wake-up lets a waiter publish a batch.
func (b *pubBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	if b.room != nil && (b.used == 0 || b.used <= b.limit-b.limit/16) {
		close(b.room)
		b.room = nil
	}
	b.mu.Unlock()
}
