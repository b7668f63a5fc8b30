package mux

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// bodyCatcher keeps the bodies of the contents it is handed.
type bodyCatcher struct{ bodies [][]byte }

func (b *bodyCatcher) Async(_ proto.Method, msg *ops.Message) { b.bodies = append(b.bodies, msg.Body) }
func (b *bodyCatcher) Closed(error)                           {}
func (b *bodyCatcher) Oversized(proto.Method, uint64)         {}

// feedContent hands ch a basic.deliver's header and body, in frames of
// frame bytes, as the reader would.
func feedContent(t *testing.T, ch *Channel, body []byte, frame int) {
	t.Helper()
	require.NoError(t, ch.handleMethod(&proto.BasicDeliver{ConsumerTag: "c", DeliveryTag: ch.lastDeliveryTag + 1}))
	hdr, err := proto.AppendContentHeader(nil, ch.ID, proto.ClassBasic, uint64(len(body)), &ops.Message{})
	require.NoError(t, err)
	require.NoError(t, ch.handleContent(proto.FrameHeader, hdr[7:len(hdr)-1]))
	for len(body) > 0 {
		n := min(frame, len(body))
		require.NoError(t, ch.handleContent(proto.FrameBody, body[:n]))
		body = body[n:]
	}
}

// TestBodyReserveBudget (issue 27, point 5): headers reserve their bodies
// ahead only within the connection's budget; bodies past it grow as their
// bytes arrive and still arrive whole; the budget is given back as bodies
// are handed over.
func TestBodyReserveBudget(t *testing.T) {
	c := &Conn{cfg: Config{MaxMessageSize: DefaultMaxMessageSize}}
	var catcher bodyCatcher
	chans := make([]*Channel, 4)
	for i := range chans {
		chans[i] = &Channel{ID: uint16(i + 1), c: c, h: &catcher}
	}
	// Four headers announcing 12 MiB each: the first two reserve 8 MiB
	// each, the 16 MiB budget; the others reserve nothing.
	for _, ch := range chans {
		require.NoError(t, ch.handleMethod(&proto.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}))
		hdr, err := proto.AppendContentHeader(nil, ch.ID, proto.ClassBasic, 12<<20, &ops.Message{})
		require.NoError(t, err)
		require.NoError(t, ch.handleContent(proto.FrameHeader, hdr[7:len(hdr)-1]))
	}
	require.Equal(t, bodyReserveBudget, c.bodyReserved, "reserved ahead by four headers")
	require.Zero(t, cap(chans[2].asm.msg.Body), "a header past the budget reserves nothing")
	require.Zero(t, cap(chans[3].asm.msg.Body), "a header past the budget reserves nothing")

	// Their bodies, interleaved frame by frame, arrive intact.
	want := make([][]byte, len(chans))
	for i := range want {
		want[i] = bytes.Repeat([]byte{byte('a' + i)}, 12<<20)
	}
	const frame = 128 << 10
	for off := 0; off < 12<<20; off += frame {
		for i, ch := range chans {
			require.NoError(t, ch.handleContent(proto.FrameBody, want[i][off:off+frame]))
		}
	}
	require.Len(t, catcher.bodies, len(chans))
	for i, got := range catcher.bodies {
		require.True(t, bytes.Equal(want[i], got), "body %d", i)
		require.LessOrEqual(t, cap(got), 2*len(got), "a grown body holds at most twice its bytes")
	}
	require.Zero(t, c.bodyReserved, "every body handed over")

	// Within the budget a body is one allocation of its size, as before.
	catcher.bodies = nil
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	feedContent(t, chans[0], want[0][:1<<20], frame)
	runtime.ReadMemStats(&after)
	require.Equal(t, 1<<20, cap(catcher.bodies[0]))
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20+64<<10), "bytes allocated for a 1 MiB body")
}
