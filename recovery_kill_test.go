package leveret_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// failingWrites is a connection whose writes fail after the first few:
// one that dies right after its handshake, during recovery.
type failingWrites struct {
	net.Conn
	writes, after atomic.Int32
}

func (f *failingWrites) Write(b []byte) (int, error) {
	if f.writes.Add(1) > f.after.Load() {
		f.Conn.Close()
		return 0, errors.New("injected: the connection died during recovery")
	}
	return f.Conn.Write(b)
}

// TestRecoveryConnectionDiesWhileReopening (issue 23, §2): the connection
// that should re-open an explicit channel with 3,000 consumers dies while
// they are being restarted. Before, a restart refused at once ended its
// consumer under the channel's lock, which that took again: the supervisor
// deadlocked and Close never returned; and consumers whose restart the
// drop interrupted were ended although their channel survived. Now the
// channel stays suspended with every consumer, and the next connection
// restarts them all.
func TestRecoveryConnectionDiesWhileReopening(t *testing.T) {
	leakCheck(t)
	const consumers = 3000
	var conns atomic.Int32
	restarted := make(chan int32, 4)
	kick := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: time.Second}, func(c *fakeserver.Conn) {
		n := conns.Add(1)
		if n == 1 {
			go func() { // owner: this test; exits when told to drop the connection, or it ends
				select {
				case <-kick:
					c.Close()
				case <-c.Done():
				}
			}()
		}
		var consumes int32
		serveMethods(c, func(ch uint16, m proto.Method) (bool, error) {
			bc, ok := m.(*proto.BasicConsume)
			if !ok {
				return false, nil
			}
			if consumes++; consumes == consumers {
				restarted <- n
			}
			return false, c.Send(ch, &proto.BasicConsumeOk{ConsumerTag: bc.ConsumerTag})
		})
	})
	var dials atomic.Int32
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil || dials.Add(1) != 2 {
			return nc, err
		}
		f := &failingWrites{Conn: nc}
		f.after.Store(4) // the protocol header, start-ok, tune-ok and open go out
		return f, nil
	}
	recovered := make(chan leveret.Recovery, 4)
	c := dial(t, s, leveret.WithDialer(dialer),
		leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}),
		leveret.WithEventHandler(func(e leveret.Event) {
			if e.Kind == leveret.EventRecovered {
				recovered <- *e.Recovery
			}
		}))
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	var all []*leveret.Promise[*leveret.Consumer]
	for i := range consumers {
		all = append(all, ch.Consume(ops.Consume{Queue: "q", ConsumerTag: fmt.Sprint("c", i)}))
	}
	css, err := leveret.Collect(waitCtx(t), all)
	require.NoError(t, err)
	require.Equal(t, int32(1), receive(t, restarted, "the first consumers"))

	close(kick)
	require.Equal(t, int32(3), receive(t, restarted, "every consumer restarted on the third connection"))
	rep := receive(t, recovered, "EventRecovered")
	require.Equal(t, 1, rep.Channels)
	require.NoError(t, ch.Err())
	for _, cs := range css {
		require.NoError(t, cs.Err(), "a consumer ended because a connection was lost")
	}
	require.NoError(t, closeClient(t, c))
}
