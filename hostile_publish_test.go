package leveret_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// bodyPattern is n bytes that differ from another seed's at almost every
// offset, so a body with another message's bytes in it is caught.
func bodyPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}

// readContent reads one content frame set (header and body frames) and
// returns the body.
func readContent(t *testing.T, c *fakeserver.Conn) []byte {
	t.Helper()
	f, err := c.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, uint8(proto.FrameHeader), f.Type)
	_, size, err := proto.DecodeContentHeader(f.Payload, &ops.Message{})
	require.NoError(t, err)
	return readBody(t, c, int(size))
}

// readBody reads body frames until size bytes have arrived.
func readBody(t *testing.T, c *fakeserver.Conn, size int) []byte {
	t.Helper()
	body := make([]byte, 0, size)
	for len(body) < size {
		f, err := c.ReadFrame()
		require.NoError(t, err)
		require.Equal(t, uint8(proto.FrameBody), f.Type)
		body = append(body, f.Payload...)
	}
	return body
}

// TestHostileEarlyConfirmKeepsBody (issue 27, point 3): a peer acks a
// 16 MiB Client.Publish after reading only its content header, while the
// body is still being written. The next Client.Publish must not get that
// body's buffer: before, it did, and several MiB of the first message on
// the wire were the second message's bytes. Both messages arrive byte for
// byte, and both promises settle with the acks.
func TestHostileEarlyConfirmKeepsBody(t *testing.T) {
	leakCheck(t)
	const size, rounds = 16 << 20, 3
	issued := make(chan struct{})
	got := make(chan [2][]byte, rounds)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadBuffer: 64 << 10, ReadTimeout: 30 * time.Second},
		func(c *fakeserver.Conn) {
			tag := uint64(0)
			for range rounds {
				ch, _ := c.Expect(t, proto.BasicPublishID)
				f, err := c.ReadFrame()
				require.NoError(t, err)
				require.Equal(t, uint8(proto.FrameHeader), f.Type)
				c.PauseReading() // the client's writer backs up mid-body
				tag++
				c.Send(ch, &proto.BasicAck{DeliveryTag: tag})
				// A marker the client reports only after the ack before it.
				c.Send(0, &proto.ConnectionBlocked{Reason: "marker"})
				c.Send(0, &proto.ConnectionUnblocked{})
				select {
				case <-issued:
				case <-c.Done():
					return
				}
				c.ResumeReading()
				first := readBody(t, c, size)
				c.Expect(t, proto.BasicPublishID)
				second := readContent(t, c)
				tag++
				c.Send(ch, &proto.BasicAck{DeliveryTag: tag})
				got <- [2][]byte{first, second}
			}
			c.Serve()
		})
	unblocked := make(chan struct{}, 1)
	c := dial(t, s, leveret.WithBlockedHandler(func(blocked bool, _ string) {
		if !blocked {
			unblocked <- struct{}{}
		}
	}))
	for round := range rounds {
		first, second := bodyPattern(size, byte(2*round+1)), bodyPattern(size, byte(2*round+2))
		p1 := c.Publish(waitCtx(t), ops.Publish{Exchange: "x", RoutingKey: "k", Message: ops.Message{Body: first}})
		receive(t, unblocked, "the marker behind the early ack")
		p2 := c.Publish(waitCtx(t), ops.Publish{Exchange: "x", RoutingKey: "k", Message: ops.Message{Body: second}})
		issued <- struct{}{}
		bodies := receive(t, got, "both bodies")
		require.True(t, bytes.Equal(first, bodies[0]), "round %d: the first body arrived changed (%d bytes differ)", round, differing(first, bodies[0]))
		require.True(t, bytes.Equal(second, bodies[1]), "round %d: the second body arrived changed", round)
		_, err := await(t, p1)
		require.NoError(t, err)
		_, err = await(t, p2)
		require.NoError(t, err)
	}
}

// differing counts the offsets at which a and b differ.
func differing(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
