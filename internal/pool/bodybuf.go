package pool

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Client.Publish's private copies of large bodies come from pools of
// reused buffers, one per power-of-two size.
//
// Each copy lives until the broker confirms it, so with large bodies a
// stream of client-level publishes allocates its whole window again and
// again: at 1 MiB the fresh, untouched pages cost more than the copy
// itself (page faults and zeroing, then the collector), and Client.Publish
// used 2-3× the CPU per MiB of the confirm package. A buffer goes back to
// its pool only once the broker has confirmed or nacked the publish and
// every write of it is done (bodyHold): a confirmation can arrive before
// the writer has finished (a broker that reads the last bytes and acks
// before the writer's goroutine runs again; a peer that acks what it has
// not read), and a buffer reused then would put another message's bytes
// on the wire. Every other ending (a channel or connection
// that ended under it, Close) leaves the buffer to the collector, because
// its frames may still be queued for a broker that will read them.
//
// Bodies under 16 KiB are copied into an allocation of their own as
// before: for those the allocation is cheap next to the publish.
// Bodies over maxPooledBody are too rare to keep buffers for.

const (
	minPooledShift = 14 // 16 KiB
	maxPooledShift = 24 // 16 MiB
	maxPooledBody  = 1 << maxPooledShift
)

// bodyPools[i] holds *[]byte of capacity 1<<(minPooledShift+i).
var bodyPools [maxPooledShift - minPooledShift + 1]sync.Pool

// bodyClass is the pool index for a body of n bytes, or -1 if n is not
// pooled.
func bodyClass(n int) int {
	if n < 1<<minPooledShift || n > maxPooledBody {
		return -1
	}
	shift := bits.Len(uint(n - 1)) // smallest power of two >= n
	return shift - minPooledShift
}

// copyBody returns a private copy of body and, when it came from a pool,
// the buffer to give back with releaseBody.
func copyBody(body []byte) ([]byte, *[]byte) {
	class := bodyClass(len(body))
	if class < 0 {
		return append([]byte(nil), body...), nil
	}
	buf, _ := bodyPools[class].Get().(*[]byte)
	if buf == nil {
		b := make([]byte, 1<<(minPooledShift+class))
		buf = &b
	}
	return (*buf)[:copy(*buf, body)], buf
}

// ReleaseBody gives a pooled buffer back. The caller must hold the only
// reference to it that will ever be used again.
func ReleaseBody(buf *[]byte) {
	if buf == nil {
		return
	}
	bodyPools[bodyClass(cap(*buf))].Put(buf)
}

// bodyHold keeps a publish's pooled body from going back while a write of
// it may still read it. The writes in flight are counted (the low 32 bits
// of state); a confirmation that arrives while one is sets waiting and
// leaves the settling to the last write (Publish.bodyWritten): the
// publish is not reported confirmed, nor its buffer reused, before its
// frames are out.
type bodyHold struct {
	state atomic.Uint64
	ack   bool // the waiting confirmation's outcome; written before waiting is set
}

const confirmWaiting = 1 << 32

// writing counts a write of the body about to be queued.
func (h *bodyHold) writing() { h.state.Add(1) }

// notWritten takes back a write that was refused before it was queued.
func (h *bodyHold) notWritten() { h.state.Add(^uint64(0)) }

// confirmWaits records a confirmation and reports whether it must wait for
// writes still in flight; if not, the caller settles at once.
func (h *bodyHold) confirmWaits(ack bool) bool {
	h.ack = ack
	for {
		st := h.state.Load()
		if st == 0 {
			return false
		}
		if h.state.CompareAndSwap(st, st|confirmWaiting) {
			return true
		}
	}
}

// written counts a write done and reports whether it was the last one a
// waiting confirmation waited for, with that confirmation's outcome.
func (h *bodyHold) written() (settle, ack bool) {
	if h.state.Add(^uint64(0)) != confirmWaiting {
		return false, false
	}
	return true, h.ack
}

// bodyWritten is the Written callback of a pooled body's write (on the
// writer goroutine). The last one settles a confirmation that came first.
// If that write failed, the frames the peer confirmed did not all go out:
// the publish is not reported confirmed.
func (pub *Publish) bodyWritten(err error) {
	settle, ack := pub.hold.written()
	switch {
	case !settle:
	case err != nil:
		pub.finish(fmt.Errorf("%w: the broker confirmed it before its frames were written, and the write failed: %w", pub.pool.errs.NotConfirmed, err))
	default:
		pub.settleConfirmed(ack)
	}
}
