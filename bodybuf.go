package leveret

import (
	"math/bits"
	"sync"
)

// Client.Publish's private copies of large bodies come from pools of
// reused buffers, one per power-of-two size.
//
// Each copy lives until the broker confirms it, so with large bodies a
// stream of client-level publishes allocates its whole window again and
// again: at 1 MiB the fresh, untouched pages cost more than the copy
// itself (page faults and zeroing, then the collector), and Client.Publish
// used 2-3× the CPU per MiB of the confirm package. A buffer goes back to
// its pool only once the broker has confirmed or nacked the publish: the
// broker has then read every byte of it, so no write still queued or in
// progress can read it again. Every other ending (a channel or connection
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

// releaseBody gives a pooled buffer back. The caller must hold the only
// reference to it that will ever be used again.
func releaseBody(buf *[]byte) {
	if buf == nil {
		return
	}
	bodyPools[bodyClass(cap(*buf))].Put(buf)
}
