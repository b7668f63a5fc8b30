package leveret_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// A peer that refuses channels, or drops the connection, while the client
// opens them (issue 27, point 1). The reader must never see a channel the
// client has not finished linking: before, a channel.close racing the open
// crashed the process on a nil link.

// serveMethods plays a broker that answers channel.close and
// connection.close itself and hands every other method to handle, with m
// nil when nothing arrived within the server's read timeout; it returns
// when handle says to drop the connection, a send fails, or the client
// hangs up or closes.
func serveMethods(c *fakeserver.Conn, handle func(ch uint16, m proto.Method) (drop bool, err error)) {
	for {
		ch, m, err := c.ReadMethod()
		if errors.Is(err, fakeserver.ErrTimeout) {
			ch, m, err = 0, nil, nil
		} else if err != nil {
			return
		}
		drop := false
		switch {
		case m != nil && m.ID() == proto.ChannelCloseID:
			err = c.Send(ch, &proto.ChannelCloseOk{})
		case m != nil && m.ID() == proto.ConnectionCloseID:
			c.Send(0, &proto.ConnectionCloseOk{})
			return
		default:
			drop, err = handle(ch, m)
		}
		if drop || err != nil {
			return
		}
	}
}

// onOpen is a serveMethods handler that hands channel.open to open.
func onOpen(open func(ch uint16) (drop bool, err error)) func(uint16, proto.Method) (bool, error) {
	return func(ch uint16, m proto.Method) (bool, error) {
		if m != nil && m.ID() == proto.ChannelOpenID {
			return open(ch)
		}
		return false, nil
	}
}

// refuseEveryOpen plays a broker that answers every channel.open with
// channel.close 504, and counts the opens.
func refuseEveryOpen(opens *atomic.Int64) func(*fakeserver.Conn) {
	return func(c *fakeserver.Conn) {
		serveMethods(c, onOpen(func(ch uint16) (bool, error) {
			opens.Add(1)
			return false, c.Send(ch, &proto.ChannelClose{ReplyCode: uint16(proto.ChannelError), ReplyText: "CHANNEL_ERROR - refused",
				ClassID: uint16(proto.ChannelOpenID >> 16), MethodID: uint16(proto.ChannelOpenID & 0xffff)})
		}))
	}
}

// TestHostileChannelRefusedWhileOpening: 8 goroutines open 40,000 channels
// in all, every one refused by the peer the moment it is opened. Each
// Client.Channel returns the *ChannelError; nothing crashes; the connection
// stays up.
func TestHostileChannelRefusedWhileOpening(t *testing.T) {
	leakCheck(t)
	const workers, opens = 8, 40_000
	var seen atomic.Int64
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, refuseEveryOpen(&seen))
	for _, reconnect := range []bool{false, true} {
		var opts []leveret.Option
		if reconnect {
			opts = append(opts, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
		}
		c := dial(t, s, opts...)
		var left atomic.Int64
		left.Store(opens / 2)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() { // owner: this test; exits when the opens are used up
				defer wg.Done()
				for left.Add(-1) >= 0 {
					ch, err := c.Channel(waitCtx(t))
					var ce *leveret.ChannelError
					if !errors.As(err, &ce) || ce.Code != leveret.ReplyCode(proto.ChannelError) || ch != nil {
						errs <- errors.Join(errors.New("want the peer's 504 and no channel"), err)
						return
					}
				}
			}()
		}
		// The pool's channels, Client.Get's and Client.Consume's open the
		// same way: each operation fails, none hangs.
		for i := range 20 {
			_, err := await(t, c.QueueDeclare(ops.QueueDeclare{Queue: fmt.Sprint("q", i)}))
			require.Error(t, err, "a declare on a refused pool channel")
			_, err = await(t, c.Get(ops.Get{Queue: "q"}))
			require.Error(t, err, "a Get on a refused Get channel")
			_, err = await(t, c.Consume(ops.Consume{Queue: "q"}))
			require.Error(t, err, "a consumer on a refused channel")
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.NoError(t, c.Err(), "the connection survives refused channels")
		require.NoError(t, closeClient(t, c))
	}
	require.GreaterOrEqual(t, seen.Load(), int64(opens), "channel.open frames the peer refused")
}

// TestHostileConnectionDropsWhileOpening: the peer accepts channels but
// drops the connection every few dozen opens, while 8 goroutines open
// channels on a client that reconnects. Nothing crashes, every
// Client.Channel returns an open channel (an open the drop interrupted is
// tried again on the next connection), and Close joins everything.
func TestHostileConnectionDropsWhileOpening(t *testing.T) {
	leakCheck(t)
	const workers, opens, dropEvery = 8, 2_000, 37
	var conns atomic.Int64
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second, ForgetEnded: true}, func(c *fakeserver.Conn) {
		conns.Add(1)
		n := 0
		serveMethods(c, onOpen(func(ch uint16) (bool, error) {
			if n++; n%dropEvery == 0 {
				return true, nil // the connection drops with opens in flight
			}
			return false, c.Send(ch, &proto.ChannelOpenOk{})
		}))
	})
	c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
	var left, opened atomic.Int64
	left.Store(opens)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() { // owner: this test; exits when the opens are used up
			defer wg.Done()
			for left.Add(-1) >= 0 {
				ch, err := c.Channel(waitCtx(t))
				if err != nil {
					errs <- err
					return
				}
				opened.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				ch.Close(ctx) // may meet the next drop: Err says how it ended
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err, "Client.Channel while the connection drops")
	}
	require.Equal(t, int64(opens), opened.Load())
	require.Greater(t, conns.Load(), int64(opens/dropEvery/2), "connections the peer dropped")
	require.NoError(t, closeClient(t, c))
}
