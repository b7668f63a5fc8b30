package mux

import (
	"context"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Writing large bodies through.
//
// Publish lets its caller reuse the body as soon as it returns. For a
// small body that is met by copying it into the output queue. For a large
// one the copy is most of what publishing costs the client (at 1 MiB
// bodies, a third of its CPU), so on a connection that takes vectored
// writes its body frames are queued by reference instead, and Publish
// returns once the writer has handed them to the socket: the caller keeps
// the body until then, which is what it would have been doing while
// copying, and the kernel's socket buffer keeps the broker fed while the
// caller comes back for the next one.
//
// If ctx ends first and the frames are still queued, they are copied
// after all (detachRefs) and Publish returns: they go out as queued. If
// the writer has taken them, it is writing them, and Publish waits for
// that write, which ends with the connection (the write deadline, two
// heartbeat intervals, bounds a peer that stopped reading).
//
// TLS connections copy: every write there is a record encrypted from a
// copy anyway (see write), so writing through would only add the wait.

// queuedRefs names the references one publish added to the output queue:
// wrefs[from:to] of batch number batch. It is empty when none were added.
type queuedRefs struct {
	batch    uint64
	from, to int
}

func (q queuedRefs) empty() bool { return q.from == q.to }

// writesThrough says whether a publish of msg is written through.
func (c *Conn) writesThrough(msg *ops.Message) bool {
	return c.vectored && len(msg.Body) >= proto.MinBodyRef
}

// writeThrough publishes msg with its large body frames queued by
// reference, and returns once they have been written, failed to be (the
// error then goes to written, like any write's), or, if ctx ends while
// they are still queued, once they have been copied. written is called as
// for any publish.
func (ch *Channel) writeThrough(ctx context.Context, m *proto.BasicPublish, msg *ops.Message, written func(error)) error {
	done := make(chan struct{})
	_, q, err := ch.publish(m, msg, true, func(err error) { // on the writer, after the write
		if written != nil {
			written(err)
		}
		close(done)
	})
	if err != nil || q.empty() { // refused, or held as a private copy
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	if !ch.c.detachRefs(q, msg.Body) {
		<-done // being written: the write ends, one way or the other
	}
	return nil
}

// detachRefs points the references q at a private copy of body, if they
// are still queued, and says whether it did; if not, the writer has taken
// them. The references of one publish are consecutive pieces of its body
// from the start (proto.AppendPublishRefs).
func (c *Conn) detachRefs(q queuedRefs, body []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wbatch != q.batch {
		return false
	}
	cp := append([]byte(nil), body...)
	at := 0
	for i := q.from; i < q.to; i++ {
		n := len(c.wrefs[i].Chunk)
		c.wrefs[i].Chunk = cp[at : at+n : at+n]
		at += n
	}
	return true
}
