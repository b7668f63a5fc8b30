package leveret_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/ops"
)

// Settings the protocol cannot carry, or that make no sense, fail Dial at
// once with an error naming the setting; nothing is dialled.
func TestOptionsOutOfRangeFailDial(t *testing.T) {
	leakCheck(t)
	for _, tc := range []struct {
		opt  leveret.Option
		want string
	}{
		{leveret.WithHeartbeat(-time.Second), "heartbeat"},
		{leveret.WithFrameMax(100), "frame_max 100 below"},
		{leveret.WithFrameMax(1 << 28), "above the client limit"},
		{leveret.WithTopologyChannels(0), "topology channels"},
		{leveret.WithWriteBuffer(10), "write buffer"},
		{leveret.WithUnconfirmedLimit(10), "unconfirmed limit"},
		{leveret.WithMaxMessageSize(0), "max message size"},
		{leveret.WithConsumerMemoryLimit(0), "consumer memory limit"},
		{leveret.WithConsumerOverflowLimit(-2), "overflow limit"},
		{leveret.WithConsumerBuffer(0), "consumer buffer"},
		{leveret.WithConnectionTimeout(-time.Second), "connection timeout"},
		{leveret.WithExternalAuth(), "EXTERNAL authentication needs TLS"},
		{leveret.WithMechanisms(), "at least one mechanism"},
		{leveret.WithMechanisms("CRAM-MD5"), "not supported"},
	} {
		dialled := false
		_, err := leveret.Dial(context.Background(), "amqp://127.0.0.1:1/", tc.opt,
			leveret.WithDialer(func(context.Context, string, string) (net.Conn, error) {
				dialled = true
				return nil, errors.New("dialled")
			}))
		require.ErrorContains(t, err, tc.want)
		require.False(t, dialled, "%s: dialled anyway", tc.want)
	}
}

// Options in range take effect: the handshake carries the channel and
// frame limits, the logger hears the connection, the return handler gets
// an explicit channel's returns, and a small unconfirmed limit makes
// Client.Publish wait for confirmations instead of failing.
func TestOptionsTakeEffect(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	var logs bytes.Buffer
	returned := make(chan ops.Return, 1)
	c := dial(t, s,
		leveret.WithChannelMax(10), leveret.WithFrameMax(8192), leveret.WithConnectionTimeout(5*time.Second),
		leveret.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		leveret.WithWriteBuffer(1<<16), leveret.WithUnconfirmedLimit(4096),
		leveret.WithReturnHandler(func(r ops.Return) { returned <- r }),
		leveret.WithConsumerOverflowLimit(5))
	hs := s.Conns()[0].Handshake()
	require.Equal(t, uint16(10), hs.TuneOk.ChannelMax)
	require.Equal(t, uint32(8192), hs.TuneOk.FrameMax)
	require.Equal(t, uint32(8192), c.FrameMax())

	// 20 publishes of 1 KiB under a 4 KiB limit: most wait for room.
	ctx := waitCtx(t)
	var all []leveret.Waiter
	for range 20 {
		all = append(all, c.Publish(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: make([]byte, 1024)}}))
	}
	require.NoError(t, leveret.WaitAll(ctx, all...))

	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.Send(ctx, ops.Publish{RoutingKey: "unroutable", Mandatory: true, Message: ops.Message{Body: []byte("r")}}))
	require.Equal(t, "r", string(receive(t, returned, "return").Message.Body))

	require.NoError(t, closeClient(t, c))
	require.True(t, strings.Contains(logs.String(), "amqp: connected"), "log: %s", logs.String())
}

// A publish whose ctx ends while it waits for room under the unconfirmed
// limit fails with ctx's error and sends nothing.
func TestOptionsUnconfirmedLimitHonoursCtx(t *testing.T) {
	leakCheck(t)
	// A broker that never confirms: confirm.select is answered, publishes
	// are not.
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: time.Second}, func(c *fakeserver.Conn) { c.Serve() })
	c := dial(t, s, leveret.WithUnconfirmedLimit(4096))
	first := c.Publish(waitCtx(t), ops.Publish{RoutingKey: "q", Message: ops.Message{Body: make([]byte, 4000)}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Publish(ctx, ops.Publish{RoutingKey: "q", Message: ops.Message{Body: make([]byte, 1024)}}).Wait(waitCtx(t))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, closeClient(t, c))
	_, err = first.Wait(waitCtx(t))
	require.ErrorIs(t, err, leveret.ErrNotConfirmed)
}

// States and event kinds name themselves, unknown values included.
func TestStateAndEventNames(t *testing.T) {
	names := map[fmt.Stringer]string{
		leveret.StateConnected: "connected", leveret.StateReconnecting: "reconnecting", leveret.StateClosed: "closed",
		leveret.State(9):       "State(9)",
		leveret.EventConnected: "connected", leveret.EventDisconnected: "disconnected",
		leveret.EventReconnecting: "reconnecting", leveret.EventRecovered: "recovered", leveret.EventClosed: "closed",
		leveret.EventMessageRefused: "message refused", leveret.EventConsumerRefused: "consumer refused",
		leveret.EventKind(99): "EventKind(99)",
		leveret.SettleAck:     "ack", leveret.SettleNack: "nack", leveret.SettleReject: "reject",
	}
	for v, want := range names {
		require.Equal(t, want, v.String())
	}
}

// ANONYMOUS is used only when asked for: it sends no credentials. By
// default the client logs in with PLAIN even where the broker offers
// ANONYMOUS first.
func TestMechanismAnonymousOnlyWhenAsked(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{Mechanisms: "ANONYMOUS PLAIN AMQPLAIN", ReadTimeout: time.Second}, nil)
	c := dial(t, s)
	require.Equal(t, "PLAIN", s.Conns()[0].Handshake().StartOk.Mechanism)
	require.NoError(t, closeClient(t, c))

	c = dial(t, s, leveret.WithMechanisms("anonymous"))
	start := s.Conns()[1].Handshake().StartOk
	require.Equal(t, "ANONYMOUS", start.Mechanism)
	require.Empty(t, start.Response, "credentials sent with ANONYMOUS")
	require.NoError(t, closeClient(t, c))
}
