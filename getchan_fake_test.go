package leveret_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// TestClientGetChannelsCloseWhenIdle: past 16 queues' Get channels, the
// idle ones (no Get pending, no delivery unacknowledged) are closed when a
// new one opens; a Get of a queue whose channel was closed opens another,
// and a channel whose delivery is still unacknowledged stays open.
func TestClientGetChannelsCloseWhenIdle(t *testing.T) {
	leakCheck(t)
	var closes atomic.Int32
	b := &fakeserver.Broker{Answered: func(_ int, _ uint16, m proto.Method) {
		if m.ID() == proto.ChannelCloseID {
			closes.Add(1)
		}
	}}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	c := dial(t, s)
	held, err := await(t, c.Get(ops.Get{Queue: "full-held"}))
	require.NoError(t, err)
	require.False(t, held.Empty())
	for i := range 20 {
		r, err := await(t, c.Get(ops.Get{Queue: fmt.Sprintf("full-%d", i)}))
		require.NoError(t, err)
		require.False(t, r.Empty())
		_, err = r.Delivery.Ack().Wait(waitCtx(t))
		require.NoError(t, err)
	}
	require.Positive(t, closes.Load(), "idle Get channels were closed")
	// The held delivery's channel was never idle: its ack still works.
	_, err = held.Delivery.Ack().Wait(waitCtx(t))
	require.NoError(t, err)
	r, err := await(t, c.Get(ops.Get{Queue: "full-0"}))
	require.NoError(t, err)
	require.False(t, r.Empty(), "a Get after its channel was closed opens another")
}

// TestClientGetAcrossLostConnection: a Get whose connection is lost before
// its answer goes out again on the next connection (the broker requeued
// what it took), while a NoAck Get, which may have taken its message, fails
// with the connection's error.
func TestClientGetAcrossLostConnection(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{Before: func(n, _ int, _ uint16, m proto.Method) bool {
		g, ok := m.(*proto.BasicGet)
		return ok && n == 1 && g.Queue == "full-lost" // the first connection dies under it
	}}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
	r, err := await(t, c.Get(ops.Get{Queue: "full-lost"}))
	require.NoError(t, err)
	require.False(t, r.Empty())
	require.Equal(t, "full-lost", string(r.Delivery.Body))
	_, err = r.Delivery.Ack().Wait(waitCtx(t))
	require.NoError(t, err)

	b2 := &fakeserver.Broker{Before: func(_, _ int, _ uint16, m proto.Method) bool {
		g, ok := m.(*proto.BasicGet)
		return ok && g.NoAck
	}}
	s2 := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b2.Serve)
	c2 := dial(t, s2, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
	_, err = await(t, c2.Get(ops.Get{Queue: "full-noack", NoAck: true}))
	var ce *leveret.ConnectionError
	require.ErrorAs(t, err, &ce, "a NoAck Get lost with its connection fails")
}

// TestClientGetWhileOffline: a Get issued while the client reconnects
// waits for the next connection and runs there; one still waiting when
// the client closes fails with ErrClosed.
func TestClientGetWhileOffline(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{}
	var conns atomic.Int32
	release := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, func(c *fakeserver.Conn) {
		// The second connection waits, the third is never answered: the
		// client stays offline meanwhile.
		switch conns.Add(1) {
		case 1:
		case 2:
			select {
			case <-release:
			case <-c.Done():
				return
			}
		default:
			<-c.Done()
			return
		}
		b.Serve(c)
	})
	down := make(chan struct{}, 4)
	c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == leveret.EventDisconnected {
				down <- struct{}{}
			}
		}))
	s.Conns()[0].Close()
	receive(t, down, "EventDisconnected")
	parked := c.Get(ops.Get{Queue: "full-offline"})
	close(release)
	r, err := await(t, parked)
	require.NoError(t, err)
	require.Equal(t, "full-offline", string(r.Delivery.Body))

	s.Conns()[1].Close()
	receive(t, down, "EventDisconnected")
	late := c.Get(ops.Get{Queue: "full-late"})
	require.NoError(t, c.Close(waitCtx(t)))
	_, err = await(t, late)
	require.ErrorIs(t, err, leveret.ErrClosed)
}

// TestClientGetAtChannelLimit: a Get that finds no free channel number
// fails with ErrChannelLimit at once (it is not parked: no reconnect would
// help), and the queues whose Get channels are open still work.
func TestClientGetAtChannelLimit(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second, ChannelMax: 2}, b.Serve)
	c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
	var held []*leveret.Delivery // unacknowledged: their channels are never idle
	for i := range 2 {
		r, err := await(t, c.Get(ops.Get{Queue: fmt.Sprintf("full-%d", i)}))
		require.NoError(t, err)
		held = append(held, r.Delivery)
	}
	_, err := await(t, c.Get(ops.Get{Queue: "full-2"}))
	require.ErrorIs(t, err, leveret.ErrChannelLimit)
	r, err := await(t, c.Get(ops.Get{Queue: "full-0"}))
	require.NoError(t, err)
	require.False(t, r.Empty())
	for _, d := range held {
		_, err := d.Ack().Wait(waitCtx(t))
		require.NoError(t, err)
	}
}
