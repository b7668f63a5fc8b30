package tx_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
	"github.com/leveret-mq/leveret/tx"
)

// Protocol-level tests against a scripted broker; integration tests
// against RabbitMQ are in tests/tx_test.go.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// txBroker answers tx.select, channel.close and connection.close, and
// hands every other method it receives to the test, which replies by hand
// on channel selected (the channel that sent tx.select).
func txBroker(t *testing.T) (srv *fakeserver.Server, got <-chan proto.Method, selected <-chan uint16, c *leveret.Client) {
	gotc := make(chan proto.Method, 64)
	selc := make(chan uint16, 1)
	srv = fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		for {
			ch, m, err := c.ReadMethod()
			if errors.Is(err, fakeserver.ErrTimeout) {
				continue
			}
			if err != nil {
				return
			}
			switch m.(type) {
			case *proto.TxSelect:
				selc <- ch
				c.Send(ch, &proto.TxSelectOk{})
				continue
			case *proto.ChannelClose:
				c.Send(ch, &proto.ChannelCloseOk{})
				continue
			case *proto.ConnectionClose:
				c.Send(0, &proto.ConnectionCloseOk{})
				return
			case *proto.BasicPublish:
				c.ReadFrame() // the content header; the bodies here are empty
			}
			gotc <- m
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := leveret.Dial(ctx, srv.URL())
	require.NoError(t, err)
	got, selected = gotc, selc
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(cctx)
	})
	return srv, got, selected, c
}

func expect(t *testing.T, got <-chan proto.Method, id proto.MethodID) {
	t.Helper()
	select {
	case m := <-got:
		require.Equal(t, id, m.ID())
	case <-time.After(5 * time.Second):
		require.Failf(t, "nothing received", "want %v", id)
	}
}

// Nothing goes out behind a pending commit until the broker answers it.
func TestTxCommitIsABarrier(t *testing.T) {
	srv, got, selected, c := txBroker(t)
	ctx := context.Background()
	x, err := tx.New(ctx, c)
	require.NoError(t, err)
	id := <-selected

	x.Publish(ctx, ops.Publish{RoutingKey: "q"})
	commit := x.Commit()
	x.Publish(ctx, ops.Publish{RoutingKey: "q"})
	rollback := x.Rollback()
	expect(t, got, proto.BasicPublishID)
	expect(t, got, proto.TxCommitID)
	select {
	case m := <-got:
		require.Failf(t, "sent behind a pending commit", "%v", m.ID())
	case <-time.After(100 * time.Millisecond):
	}
	require.ErrorIs(t, commit.Err(), leveret.ErrPending)

	conn := srv.Conns()[0]
	require.NoError(t, conn.Send(id, &proto.TxCommitOk{}))
	_, err = commit.Wait(ctx)
	require.NoError(t, err)
	expect(t, got, proto.BasicPublishID)
	expect(t, got, proto.TxRollbackID)
	require.NoError(t, conn.Send(id, &proto.TxRollbackOk{}))
	_, err = rollback.Wait(ctx)
	require.NoError(t, err)

	// The broker closes the channel: a pending commit, and one issued
	// afterwards, fail with the cause.
	pending := x.Commit()
	expect(t, got, proto.TxCommitID)
	require.NoError(t, conn.Send(id, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED", ClassID: 90, MethodID: 20}))
	_, err = pending.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
	require.ErrorIs(t, x.Commit().Err(), leveret.ErrPreconditionFailed)
	require.ErrorIs(t, x.Err(), leveret.ErrPreconditionFailed)
	require.NoError(t, x.Close(ctx))
}
