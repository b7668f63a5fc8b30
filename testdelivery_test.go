package leveret_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// TestTestDeliveryRecords: a test delivery's Ack, Nack and Reject reach
// the recorder with what was asked, the promise carries the recorder's
// error, and without a recorder they succeed; nothing needs a broker.
func TestTestDeliveryRecords(t *testing.T) {
	var got []leveret.Settlement
	refuse := errors.New("refused by the test")
	record := func(s leveret.Settlement) error {
		got = append(got, s)
		if s.Kind == leveret.SettleReject {
			return refuse
		}
		return nil
	}
	d := leveret.NewTestDelivery(ops.Message{Body: []byte("order-1")}, 7, record)
	require.Nil(t, d.Channel())
	_, err := d.Ack().Wait(context.Background())
	require.NoError(t, err)
	_, err = d.Nack(ops.Nack{Multiple: true, Requeue: true}).Wait(context.Background())
	require.NoError(t, err)
	_, err = d.Reject(ops.Reject{}).Wait(context.Background())
	require.ErrorIs(t, err, refuse)
	require.Len(t, got, 3)
	require.Equal(t, leveret.SettleAck, got[0].Kind)
	require.Same(t, d, got[0].Delivery)
	require.Equal(t, uint64(7), got[0].DeliveryTag)
	require.Equal(t, leveret.Settlement{Delivery: d, DeliveryTag: 7, Multiple: true, Kind: leveret.SettleNack, Requeue: true, Count: 1}, got[1])
	require.Equal(t, leveret.SettleReject, got[2].Kind)

	quiet := leveret.NewTestDelivery(ops.Message{}, 1, nil)
	_, err = quiet.Ack().Wait(context.Background())
	require.NoError(t, err)
	// A Delivery made by hand is still refused: it names no channel.
	_, err = (&leveret.Delivery{DeliveryTag: 1}).Ack().Wait(context.Background())
	require.ErrorIs(t, err, leveret.ErrUnknownDeliveryTag)
}

// handle is code under test: it acks an order it can parse and rejects
// (without requeue, for the dead-letter exchange) one it cannot.
func handle(ctx context.Context, d *leveret.Delivery) error {
	if len(d.Body) == 0 {
		_, err := d.Reject(ops.Reject{}).Wait(ctx)
		return err
	}
	_, err := d.Ack().Wait(ctx)
	return err
}

// A handler's acknowledgements checked in a unit test, without a broker.
func ExampleNewTestDelivery() {
	record := func(s leveret.Settlement) error {
		fmt.Printf("%s tag %d requeue=%v\n", s.Kind, s.DeliveryTag, s.Requeue)
		return nil
	}
	ctx := context.Background()
	_ = handle(ctx, leveret.NewTestDelivery(ops.Message{Body: []byte(`{"id":1}`)}, 1, record))
	_ = handle(ctx, leveret.NewTestDelivery(ops.Message{}, 2, record))
	// Output:
	// ack tag 1 requeue=false
	// reject tag 2 requeue=false
}
