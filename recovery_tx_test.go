package leveret_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// serveTx plays a broker for transactions: it answers channel.open,
// tx.select, tx.commit and tx.rollback, skips publishes' content, counts
// rollbacks, and drops the connection when told.
func serveTx(rollbacks *atomic.Int32, drop <-chan struct{}) func(*fakeserver.Conn) {
	return func(c *fakeserver.Conn) {
		for {
			f, err := c.ReadFrame()
			if errors.Is(err, fakeserver.ErrTimeout) {
				select {
				case <-drop:
					return
				default:
					continue
				}
			}
			if err != nil || f.Type != proto.FrameMethod {
				if err != nil {
					return
				}
				continue
			}
			m, err := proto.DecodeMethod(f.Payload)
			if err != nil {
				return
			}
			var reply proto.Method
			switch m.ID() {
			case proto.ChannelOpenID:
				reply = &proto.ChannelOpenOk{}
			case proto.TxSelectID:
				reply = &proto.TxSelectOk{}
			case proto.TxCommitID:
				reply = &proto.TxCommitOk{}
			case proto.TxRollbackID:
				rollbacks.Add(1)
				reply = &proto.TxRollbackOk{}
			case proto.ChannelCloseID:
				reply = &proto.ChannelCloseOk{}
			case proto.ConnectionCloseID:
				c.Send(0, &proto.ConnectionCloseOk{})
				return
			}
			if reply != nil && c.Send(f.Channel, reply) != nil {
				return
			}
		}
	}
}

// TestRecoveryTxLostOnlyIfItDidSomething (issue 23, §3): a transaction
// committed just before the connection drops lost nothing, so the first
// commit on the re-opened channel commits; one that had published when the
// connection dropped is reported lost (ErrTransactionLost) and what it did
// since is rolled back. Before, the first commit after any drop in tx mode
// failed and rolled back the publishes made on the new connection.
func TestRecoveryTxLostOnlyIfItDidSomething(t *testing.T) {
	leakCheck(t)
	var rollbacks atomic.Int32
	drop := make(chan struct{})
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: 20 * time.Millisecond}, serveTx(&rollbacks, drop))
	c, recovered := dialEvents(t, s, leveret.EventRecovered)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	_, err = await(t, ch.TxSelect())
	require.NoError(t, err)
	publish := func() {
		t.Helper()
		require.NoError(t, ch.Send(waitCtx(t), ops.Publish{RoutingKey: "q", Message: ops.Message{Body: []byte("m")}}))
	}

	publish()
	_, err = await(t, ch.TxCommit())
	require.NoError(t, err)
	drop <- struct{}{} // with the transaction empty
	receive(t, recovered, "EventRecovered")
	publish()
	_, err = await(t, ch.TxCommit())
	require.NoError(t, err, "a transaction was reported lost although the one open at the drop was empty")
	require.Zero(t, rollbacks.Load())

	publish()
	drop <- struct{}{} // with a publish in the transaction
	receive(t, recovered, "EventRecovered")
	publish()
	_, err = await(t, ch.TxCommit())
	require.ErrorIs(t, err, leveret.ErrTransactionLost)
	require.Equal(t, int32(1), rollbacks.Load())
	_, err = await(t, ch.TxCommit()) // the next transaction works
	require.NoError(t, err)
}
