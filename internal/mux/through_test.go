package mux

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// throughPeer is the server end of a TCP connection to a mux.Conn: it
// answers channel.open, then reads nothing until released, and then
// collects the bodies of every publish it reads.
type throughPeer struct {
	once    sync.Once
	release chan struct{}
	bodies  chan []byte
	done    chan struct{}
}

// newThroughConn starts a Conn over loopback TCP with one open channel.
// Cleanup closes both ends and joins every goroutine.
func newThroughConn(t *testing.T) (*Conn, *Channel, *throughPeer) {
	t.Helper()
	cli, srv := tcpPair(t)
	// Small fixed socket buffers (no autotuning, which on loopback grows
	// to tens of MiB): a few MiB the peer does not read block the writer.
	require.NoError(t, srv.SetReadBuffer(64<<10))
	require.NoError(t, cli.SetWriteBuffer(64<<10))

	p := &throughPeer{release: make(chan struct{}), bodies: make(chan []byte, 16), done: make(chan struct{})}
	go p.serve(srv) // owner: the test; exits when the connection ends
	c := New(cli, proto.NewFrameReader(cli), Config{FrameMax: 131072, ChannelMax: 16})
	t.Cleanup(func() {
		p.read()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
		srv.Close()
		<-p.done
	})
	opened := make(chan error, 1)
	ch, err := c.OpenChannel(nil, func(err error) { opened <- err })
	require.NoError(t, err)
	require.NoError(t, <-opened)
	return c, ch, p
}

// read lets the peer read.
func (p *throughPeer) read() { p.once.Do(func() { close(p.release) }) }

func (p *throughPeer) serve(srv net.Conn) {
	defer close(p.done)
	defer close(p.bodies)
	fr := proto.NewFrameReader(srv)
	var body []byte
	var want uint64
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f.Type {
		case proto.FrameMethod:
			m, err := proto.DecodeMethod(f.Payload)
			if err != nil {
				return
			}
			switch m.ID() {
			case proto.ChannelOpenID:
				out, _ := proto.AppendMethodFrame(nil, f.Channel, &proto.ChannelOpenOk{})
				srv.Write(out)
				<-p.release
			case proto.ConnectionCloseID:
				out, _ := proto.AppendMethodFrame(nil, 0, &proto.ConnectionCloseOk{})
				srv.Write(out)
			}
		case proto.FrameHeader:
			_, size, err := proto.DecodeContentHeader(f.Payload, &ops.Message{})
			if err != nil {
				return
			}
			body, want = nil, size
		case proto.FrameBody:
			body = append(body, f.Payload...)
			if uint64(len(body)) == want {
				p.bodies <- body
			}
		}
	}
}

// pattern is n bytes that no two offsets of a body share by accident.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func (p *throughPeer) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b, ok := <-p.bodies:
		require.True(t, ok, "connection ended before the publish arrived")
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("publish not received within 10 s")
		return nil
	}
}

// waitFor polls cond under wmu until it holds (the writer's progress is
// not otherwise visible from outside).
func waitFor(t *testing.T, c *Conn, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.wmu.Lock()
		ok := cond()
		c.wmu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// batches is how many batches the writer has taken so far.
func batches(c *Conn) uint64 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.wbatch
}

// TestWriteThroughReturnsAfterTheWrite: a large body on TCP is written
// from the caller's slice, so Publish returns only once its write is done
// (written has been called), and the caller may scribble on the body
// straight after without changing what was sent (-race checks that the
// writer no longer reads it).
func TestWriteThroughReturnsAfterTheWrite(t *testing.T) {
	c, ch, p := newThroughConn(t)
	require.True(t, c.vectored)
	p.read()
	for _, size := range []int{proto.MinBodyRef, 1 << 20, 3<<20 + 5} {
		body := pattern(size, byte(size))
		var written atomic.Bool
		err := ch.Publish(context.Background(), &proto.BasicPublish{RoutingKey: "q"}, &ops.Message{Body: body},
			func(err error) { require.NoError(t, err); written.Store(true) })
		require.NoError(t, err)
		require.True(t, written.Load(), "%d bytes: Publish returned before its write", size)
		want := bytes.Clone(body)
		for i := range body {
			body[i] = 0xff
		}
		require.Equal(t, want, p.next(t), "%d bytes", size)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	require.Zero(t, c.wrefBytes)
}

// TestWriteThroughCtxEndsWhileQueued: when ctx ends while the frames are
// still queued (the writer is stuck in an earlier write), they are copied
// and Publish returns at once; the message still goes out whole, with the
// bytes it had when Publish was called.
func TestWriteThroughCtxEndsWhileQueued(t *testing.T) {
	c, ch, p := newThroughConn(t)
	// A copied 8 MiB publish the peer does not read: the writer takes it
	// and blocks, with the socket buffers full.
	first := pattern(8<<20, 1)
	before := batches(c)
	_, err := ch.PublishNow(&proto.BasicPublish{RoutingKey: "q"}, &ops.Message{Body: first})
	require.NoError(t, err)
	waitFor(t, c, "writer took the first publish", func() bool { return c.wbatch > before })

	body := pattern(1<<20, 2)
	want := bytes.Clone(body)
	ctx, cancel := context.WithCancel(context.Background())
	var written atomic.Bool
	returned := make(chan error, 1)
	go func() { // owner: this test; exits when Publish returns
		returned <- ch.Publish(ctx, &proto.BasicPublish{RoutingKey: "q"}, &ops.Message{Body: body},
			func(error) { written.Store(true) })
	}()
	waitFor(t, c, "second publish queued by reference", func() bool { return len(c.wrefs) > 0 })
	cancel()
	select {
	case err := <-returned:
		require.NoError(t, err, "once queued, the publish goes out: ctx ending does not fail it")
	case <-time.After(10 * time.Second):
		t.Fatal("Publish still blocked 10 s after its ctx ended with its frames queued")
	}
	require.False(t, written.Load(), "the first write is still blocked")
	for i := range body {
		body[i] = 0xff
	}
	p.read()
	require.Equal(t, first, p.next(t))
	require.Equal(t, want, p.next(t), "the copy went out, not the scribbled body")
}

// TestWriteThroughCtxEndsWhileWriting: if the writer has already taken
// the frames, Publish waits for that write even after ctx ends: the bytes
// are being read from the caller's slice.
func TestWriteThroughCtxEndsWhileWriting(t *testing.T) {
	c, ch, p := newThroughConn(t)
	body := pattern(8<<20, 3)
	want := bytes.Clone(body)
	ctx, cancel := context.WithCancel(context.Background())
	var written atomic.Bool
	returned := make(chan error, 1)
	before := batches(c)
	go func() { // owner: this test; exits when Publish returns
		returned <- ch.Publish(ctx, &proto.BasicPublish{RoutingKey: "q"}, &ops.Message{Body: body},
			func(error) { written.Store(true) })
	}()
	waitFor(t, c, "writer took the publish", func() bool { return c.wbatch > before })
	cancel()
	select {
	case <-returned:
		t.Fatal("Publish returned while its body was being written")
	case <-time.After(50 * time.Millisecond):
	}
	p.read()
	select {
	case err := <-returned:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Publish still blocked 10 s after the peer started reading")
	}
	require.True(t, written.Load())
	for i := range body {
		body[i] = 0xff
	}
	require.Equal(t, want, p.next(t))
}
