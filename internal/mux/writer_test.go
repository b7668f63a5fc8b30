package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// queuedFrames decodes what c has queued, as "channel:method" strings with
// the ack's tag and multiple bit for basic.ack.
func queuedFrames(t *testing.T, c *Conn) []any {
	t.Helper()
	fr := proto.NewFrameReader(bytes.NewReader(c.wbuf))
	var out []any
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		m, err := proto.DecodeMethod(f.Payload)
		require.NoError(t, err)
		if a, ok := m.(*proto.BasicAck); ok {
			out = append(out, ackFrame{f.Channel, a.DeliveryTag, a.Multiple})
		} else {
			out = append(out, m.ID())
		}
	}
}

type ackFrame struct {
	ch       uint16
	tag      uint64
	multiple bool
}

// TestEnqueueAckMerges checks which queued acks become one multiple ack:
// only a cumulative ack right behind an ack of a lower tag on its channel.
func TestEnqueueAckMerges(t *testing.T) {
	type ack struct {
		ch              uint16
		tag             uint64
		multiple, cumul bool
	}
	for _, tc := range []struct {
		name string
		acks []ack // a zero ack stands for another frame in between
		want []any
	}{
		{"a run of in-order acks", []ack{{1, 1, false, true}, {1, 2, false, true}, {1, 3, false, true}},
			[]any{ackFrame{1, 3, true}}},
		{"the earlier ack need not be cumulative", []ack{{1, 2, false, false}, {1, 3, false, true}},
			[]any{ackFrame{1, 3, true}}},
		{"a multiple ack absorbs the single before it", []ack{{1, 4, false, true}, {1, 9, true, true}},
			[]any{ackFrame{1, 9, true}}},
		{"not cumulative: an earlier tag is still outstanding", []ack{{1, 1, false, true}, {1, 3, false, false}},
			[]any{ackFrame{1, 1, false}, ackFrame{1, 3, false}}},
		{"a lower tag after a higher one", []ack{{1, 5, false, true}, {1, 3, false, true}},
			[]any{ackFrame{1, 5, false}, ackFrame{1, 3, false}}},
		{"another channel", []ack{{1, 1, false, true}, {2, 2, false, true}},
			[]any{ackFrame{1, 1, false}, ackFrame{2, 2, false}}},
		{"another frame in between", []ack{{1, 1, false, true}, {}, {1, 2, false, true}},
			[]any{ackFrame{1, 1, false}, proto.BasicQosID, ackFrame{1, 2, false}}},
		{"ack everything (tag 0) is kept as it is", []ack{{1, 0, true, true}, {1, 2, false, true}},
			[]any{ackFrame{1, 0, true}, ackFrame{1, 2, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Conn{wake: make(chan struct{}, 1)}
			for _, a := range tc.acks {
				if a == (ack{}) {
					require.NoError(t, c.enqueueMethod(1, &proto.BasicQos{}, nil))
					continue
				}
				require.NoError(t, c.enqueueAck(a.ch, Ack{Tag: a.tag, Multiple: a.multiple, Cumulative: a.cumul}))
			}
			require.Equal(t, tc.want, queuedFrames(t, c))
		})
	}
}

// TestEnqueueAckNotMergedAfterFlush: an ack already handed to the writer
// cannot be taken back, even if the new buffer happens to reach the same
// length.
func TestEnqueueAckNotMergedAfterFlush(t *testing.T) {
	cli := discardConn(t)
	c := &Conn{nc: cli, wake: make(chan struct{}, 1)}
	require.NoError(t, c.enqueueAck(1, Ack{Tag: 1, Cumulative: true}))
	_, err := c.flush()
	require.NoError(t, err)
	require.NoError(t, c.enqueueAck(1, Ack{Tag: 2, Cumulative: true}))
	require.Equal(t, []any{ackFrame{1, 2, false}}, queuedFrames(t, c))
}

// BenchmarkEnqueueAck is the mux side of acking one delivery: it should
// not allocate.
func BenchmarkEnqueueAck(b *testing.B) {
	c := &Conn{wake: make(chan struct{}, 1)}
	b.ReportAllocs()
	tag := uint64(0)
	for b.Loop() {
		tag++
		if len(c.wbuf) > 1<<16 {
			c.wbuf, c.ackEnd = c.wbuf[:0], 0
		}
		c.enqueueAck(1, Ack{Tag: tag, Cumulative: tag%2 == 0}) // every other ack merges
	}
}

// failingConn is a socket whose writes fail and whose reads block until it
// is closed, so the writer, not the reader, finds the connection lost.
type failingConn struct {
	net.Conn // nil: only the methods below are used
	closed   chan struct{}
	once     bool
}

func (f *failingConn) Read([]byte) (int, error) { <-f.closed; return 0, net.ErrClosed }
func (f *failingConn) Write([]byte) (int, error) {
	return 0, errors.New("broken pipe")
}
func (f *failingConn) Close() error {
	if !f.once {
		f.once = true
		close(f.closed)
	}
	return nil
}
func (f *failingConn) SetWriteDeadline(time.Time) error { return nil }

// TestWriteFailureWrappedOnce: the error of a failed write says
// "connection lost: write failed" once, for the connection and for the
// operation whose frames were in that write.
func TestWriteFailureWrappedOnce(t *testing.T) {
	nc := &failingConn{closed: make(chan struct{})}
	c := New(nc, proto.NewFrameReader(nc), Config{FrameMax: 4096})
	written := make(chan error, 1)
	require.NoError(t, c.enqueueMethod(0, &proto.ConnectionCloseOk{}, func(err error) { written <- err }))
	werr := <-written
	<-c.Dead()
	c.Abort(c.Err())
	for _, err := range []error{werr, c.Err()} {
		require.Error(t, err)
		require.Equal(t, 1, strings.Count(err.Error(), "write failed"), "%v", err)
		require.Equal(t, 1, strings.Count(err.Error(), "connection lost"), "%v", err)
		require.Contains(t, err.Error(), "broken pipe")
	}
}

// TestFlushKeepsSpareForLargeWriteLimit: a batch the size of a large
// WriteLimit (plus a message) is kept for reuse, so a bigger limit does not
// mean a fresh buffer per batch; with the default limit a batch past
// maxSpareBuffer is still let go.
func TestFlushKeepsSpareForLargeWriteLimit(t *testing.T) {
	cli := discardConn(t)
	for _, tc := range []struct {
		limit, batch int
		kept         bool
	}{
		{4 << 20, 5 << 20, true},  // 4 MiB limit, one 1 MiB message past it
		{1 << 20, 5 << 20, false}, // default limit: one huge message is not pinned
	} {
		c := &Conn{nc: cli, wake: make(chan struct{}, 1), cfg: Config{WriteLimit: tc.limit}}
		big := make([]byte, tc.batch)
		require.NoError(t, c.enqueue(func(dst []byte) ([]byte, error) { return append(dst, big...), nil }, nil))
		_, err := c.flush()
		require.NoError(t, err)
		require.Equal(t, tc.kept, cap(c.wspare) >= tc.batch, "limit %d, batch %d", tc.limit, tc.batch)
	}
}

// discardConn is a connection whose peer reads and discards everything
// until the test ends.
func discardConn(t *testing.T) net.Conn {
	cli, srv := net.Pipe()
	drained := make(chan struct{})
	go func() { // owner: the test; exits when cli is closed at its end
		defer close(drained)
		io.Copy(io.Discard, srv)
	}()
	t.Cleanup(func() {
		cli.Close()
		<-drained
	})
	return cli
}

// TestSharedPublishWritesTheSameBytes: publishes queued by reference, mixed
// with copied ones and an ack, reach a TCP peer (one writev) and a pipe
// (copied flat, one write) as exactly the bytes of copying them all, and
// the batch lets the bodies go once written.
func TestSharedPublishWritesTheSameBytes(t *testing.T) {
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*13 + n)
		}
		return b
	}
	type pub struct {
		size   int
		shared bool
	}
	pubs := []pub{{1 << 20, true}, {100, true}, {64 << 10, false}, {proto.MinBodyRef, true}, {300 << 10, true}}
	const frameMax = 131072
	var want []byte
	for i, p := range pubs {
		var err error
		want, err = proto.AppendPublish(want, 1, frameMax, &proto.BasicPublish{RoutingKey: "q"}, &ops.Message{Body: body(p.size)})
		require.NoError(t, err)
		if i == 1 {
			want = proto.AppendAckFrame(want, 1, &proto.BasicAck{DeliveryTag: 7})
		}
	}
	for _, transport := range []string{"tcp", "pipe"} {
		t.Run(transport, func(t *testing.T) {
			cli, got := capturingConn(t, transport)
			c := &Conn{nc: cli, wake: make(chan struct{}, 1), cfg: Config{WriteLimit: 1 << 20, FrameMax: frameMax}}
			_, c.vectored = cli.(*net.TCPConn)
			require.Equal(t, transport == "tcp", c.vectored)
			for i, p := range pubs {
				_, err := c.enqueuePublish(1, &proto.BasicPublish{RoutingKey: "q"}, &ops.Message{Body: body(p.size)}, p.shared, nil)
				require.NoError(t, err)
				if i == 1 {
					require.NoError(t, c.enqueueAck(1, Ack{Tag: 7}))
				}
			}
			require.NotEmpty(t, c.wrefs, "large shared bodies are queued by reference")
			require.Greater(t, c.wrefBytes, 1<<20, "and count against the write limit")
			n, err := c.flush()
			require.NoError(t, err)
			require.Equal(t, len(want), n)
			require.Zero(t, c.wrefBytes)
			for _, r := range c.wspareRefs[:cap(c.wspareRefs)] {
				require.Nil(t, r.Chunk, "written bodies are not pinned by the spare")
			}
			require.Equal(t, transport == "pipe", cap(c.wflat) > 0, "flattened only where there is no writev")
			cli.Close()
			require.Equal(t, want, <-got)
		})
	}
}

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (cli, srv *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { // owner: this function; exits after one accept
		s, _ := ln.Accept()
		accepted <- s
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s := <-accepted
	require.NotNil(t, s)
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// capturingConn is a connection whose peer collects everything written
// until the client side closes, then sends it on the returned channel.
func capturingConn(t *testing.T, transport string) (net.Conn, <-chan []byte) {
	var cli, srv net.Conn
	if transport == "pipe" {
		cli, srv = net.Pipe()
	} else {
		cli, srv = tcpPair(t)
	}
	got := make(chan []byte, 1)
	go func() { // owner: the test; exits when cli is closed
		b, _ := io.ReadAll(srv)
		srv.Close()
		got <- b
	}()
	t.Cleanup(func() { cli.Close() })
	return cli, got
}
