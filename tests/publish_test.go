package tests

// Publishing: many concurrent publishers, large and empty bodies, basic.get,
// mandatory returns and a publish the broker refuses.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

const (
	pubGoroutines = 8
	pubPerG       = 100_000 / pubGoroutines
	pubHeader     = 10        // goroutine u16, seq u32, crc32 of the payload u32
	pubBig        = 200 << 10 // larger than the default frame_max (128 KiB)
	pubAckEvery   = 100       // the consumer acks with multiple every 100 deliveries
	pubPrefetch   = 1000
)

// pubSize is the body size for (g, seq): mostly small, sometimes empty,
// sometimes larger than frame_max.
func pubSize(g, seq int) int {
	switch {
	case seq%997 == 13:
		return pubBig + g
	case seq%101 == 7:
		return 0
	default:
		return pubHeader + (seq*31+g*7)%700
	}
}

// pubBody encodes (g, seq) and a checksum of a payload derived from both.
// An empty body has no room for them: the message id always carries
// "g.seq" as well.
func pubBody(g, seq int) []byte {
	n := pubSize(g, seq)
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b, uint16(g))
	binary.BigEndian.PutUint32(b[2:], uint32(seq))
	x := uint32(g)<<24 ^ uint32(seq) ^ 0x9e3779b9
	for i := pubHeader; i < n; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	binary.BigEndian.PutUint32(b[6:], crc32.ChecksumIEEE(b[pubHeader:]))
	return b
}

// pubCheck returns (g, seq) of a received message, or an error describing
// how it is corrupt.
func pubCheck(d *leveret.Delivery) (g, seq int, err error) {
	gs, ss, ok := strings.Cut(d.MessageID, ".")
	g, err1 := strconv.Atoi(gs)
	seq, err2 := strconv.Atoi(ss)
	if !ok || err1 != nil || err2 != nil || g < 0 || g >= pubGoroutines || seq < 0 || seq >= pubPerG {
		return 0, 0, fmt.Errorf("bad message id %q", d.MessageID)
	}
	b := d.Body
	if want := pubSize(g, seq); len(b) != want {
		return g, seq, fmt.Errorf("%d.%d: body of %d bytes, want %d", g, seq, len(b), want)
	}
	if len(b) == 0 {
		return g, seq, nil
	}
	if int(binary.BigEndian.Uint16(b)) != g || int(binary.BigEndian.Uint32(b[2:])) != seq {
		return g, seq, fmt.Errorf("%d.%d: body says %d.%d", g, seq, binary.BigEndian.Uint16(b), binary.BigEndian.Uint32(b[2:]))
	}
	if crc32.ChecksumIEEE(b[pubHeader:]) != binary.BigEndian.Uint32(b[6:]) {
		return g, seq, fmt.Errorf("%d.%d: checksum mismatch", g, seq)
	}
	return g, seq, nil
}

// TestPublishConcurrent publishes 100,000 messages from 8 goroutines on one
// client and consumes them on the same client, checking that none is lost,
// duplicated or corrupted.
func TestPublishConcurrent(t *testing.T) {
	t.Run("ClientPublish", func(t *testing.T) { testPublishConcurrent(t, false) })
	t.Run("ExplicitChannels", func(t *testing.T) { testPublishConcurrent(t, true) })
}

func testPublishConcurrent(t *testing.T, explicit bool) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: pubPrefetch})

	var chans []*leveret.Channel
	if explicit {
		for range pubGoroutines {
			chans = append(chans, msgChannel(t, c))
		}
	}
	pubErrs := make(chan error, pubGoroutines)
	var wg sync.WaitGroup
	for g := range pubGoroutines {
		wg.Go(func() {
			ps := make([]leveret.Waiter, 0, pubPerG)
			for seq := range pubPerG {
				o := ops.Publish{RoutingKey: q, Message: ops.Message{
					MessageID: fmt.Sprintf("%d.%d", g, seq), Body: pubBody(g, seq)}}
				if explicit {
					ps = append(ps, chans[g].Publish(ctx, o))
				} else {
					ps = append(ps, c.Publish(ctx, o))
				}
			}
			if err := leveret.WaitAll(ctx, ps...); err != nil {
				pubErrs <- fmt.Errorf("publisher %d: %w", g, err)
			}
		})
	}

	var seen [pubGoroutines][pubPerG]bool
	var last [pubGoroutines]int
	for i := range last {
		last[i] = -1
	}
	received, corrupt, dups, disorder := 0, 0, 0, 0
	var lastTag uint64
	for received < pubGoroutines*pubPerG {
		d := msgNext(t, ctx, cs)
		received++
		g, seq, err := pubCheck(d)
		if err != nil {
			if corrupt++; corrupt <= 10 {
				t.Errorf("corrupt delivery: %v", err)
			}
		} else if seen[g][seq] {
			if dups++; dups <= 10 {
				t.Errorf("duplicate delivery %d.%d", g, seq)
			}
		} else {
			seen[g][seq] = true
			// One channel's publishes reach a queue in order; the
			// client's pool makes no such promise across its channels.
			if explicit && seq < last[g] {
				if disorder++; disorder <= 10 {
					t.Errorf("publisher %d: seq %d after %d", g, seq, last[g])
				}
			}
			last[g] = max(last[g], seq)
		}
		if received%pubAckEvery == 0 {
			msgOK(t, ctx, cs.Channel().Ack(ops.Ack{DeliveryTag: d.DeliveryTag, Multiple: true}), "ack multiple")
		}
		lastTag = d.DeliveryTag
	}
	wg.Wait()
	close(pubErrs)
	for err := range pubErrs {
		t.Error(err)
	}
	if received%pubAckEvery != 0 {
		msgOK(t, ctx, cs.Channel().Ack(ops.Ack{DeliveryTag: lastTag, Multiple: true}), "final ack")
	}
	require.Zero(t, corrupt, "corrupt deliveries")
	require.Zero(t, dups, "duplicate deliveries")
	for g := range pubGoroutines {
		for seq := range pubPerG {
			if !seen[g][seq] {
				t.Fatalf("message %d.%d lost", g, seq)
			}
		}
	}
	// Nothing left over: every message was received exactly once and acked.
	msgOK(t, ctx, cs.Cancel(), "cancel")
	extra := 0
	for range cs.Deliveries() {
		extra++
	}
	assert.Zero(t, extra, "deliveries beyond the 100,000 published")
	assert.NoError(t, cs.Err())
	assert.Equal(t, uint32(0), msgDepth(t, c, q), "messages left in the queue")
	assert.NoError(t, c.Err())
}

// TestPublishBodySizes round-trips a 16 MiB body (128 frames at the
// default frame_max) and an empty one (no body frame at all).
func TestPublishBodySizes(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)

	big := make([]byte, 16<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{ContentType: "big", Body: big}}), "publish 16 MiB")
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{ContentType: "empty"}}), "publish empty")
	ch := msgChannel(t, c)
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{ContentType: "empty2", Body: []byte{}}}), "publish empty on channel")
	msgWaitDepth(t, c, q, 3)

	d := msgGet(t, c, q, false)
	assert.Equal(t, "big", d.ContentType)
	require.Len(t, d.Body, len(big))
	require.True(t, bytes.Equal(big, d.Body), "16 MiB body differs")
	msgOK(t, ctx, d.Ack(), "ack big")

	d = msgGet(t, c, q, false)
	assert.Equal(t, "empty", d.ContentType)
	assert.Empty(t, d.Body)
	msgOK(t, ctx, d.Ack(), "ack empty")

	// The empty body through a consumer as well.
	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 1})
	d = msgNext(t, ctx, cs)
	assert.Equal(t, "empty2", d.ContentType)
	assert.Empty(t, d.Body)
	msgOK(t, ctx, d.Ack(), "ack empty2")
	msgOK(t, ctx, cs.Cancel(), "cancel")
	assert.Equal(t, uint32(0), msgDepth(t, c, q))
}

// TestPublishReusesLargeBody publishes large bodies on a channel from one
// buffer, rewritten as soon as each Publish or Send returns: bodies of 16
// KiB and more on TCP are written from the caller's slice, not copied, so
// returning early would let the next message's bytes reach the broker in
// this one's frames. Sizes cross the 16 KiB threshold and frame_max (a
// body split into referenced frames and a copied tail).
func TestPublishReusesLargeBody(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	ch := msgChannel(t, c)

	sizes := []int{16<<10 - 1, 16 << 10, 128<<10 - 8, 128<<10 - 7, 128<<10 + 100, 1 << 20, 1<<20 + 3}
	fill := func(b []byte, n int) {
		for i := range b {
			b[i] = byte(n*131 + i*7 + i>>11)
		}
	}
	buf := make([]byte, 1<<20+3)
	var proms []*leveret.Promise[struct{}]
	n := 0
	for round := 0; round < 3; round++ {
		for _, size := range sizes {
			b := buf[:size]
			fill(b, n)
			o := ops.Publish{RoutingKey: q, Message: ops.Message{MessageID: strconv.Itoa(n), Body: b}}
			if n%2 == 0 {
				proms = append(proms, ch.Publish(ctx, o))
			} else {
				require.NoError(t, ch.Send(ctx, o))
			}
			fill(b, -1) // scribble over it at once
			n++
		}
	}
	for i, p := range proms {
		msgOK(t, ctx, p, "publish "+strconv.Itoa(2*i))
	}

	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 10})
	want := make([]byte, len(buf))
	for i := 0; i < n; i++ {
		d := msgNext(t, ctx, cs)
		require.Equal(t, strconv.Itoa(i), d.MessageID, "deliveries in publish order")
		size := sizes[i%len(sizes)]
		fill(want[:size], i)
		require.Len(t, d.Body, size, "message %d", i)
		require.True(t, bytes.Equal(want[:size], d.Body), "message %d (%d bytes) carries bytes written after its Publish returned", i, size)
		msgOK(t, ctx, d.Ack(), "ack")
	}
	msgOK(t, ctx, cs.Cancel(), "cancel")
}

// TestClientPublishLargeBodiesPooled: Client.Publish copies large bodies
// into buffers it reuses once the broker has confirmed them. Publishes in
// waves of 30 (so later waves get the buffers of earlier ones) with
// distinct contents, sizes in several buffer classes, must each arrive
// with their own bytes.
func TestClientPublishLargeBodiesPooled(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)

	sizes := []int{16 << 10, 20 << 10, 64<<10 + 1, 300 << 10, 1 << 20}
	content := func(i int) []byte {
		b := make([]byte, sizes[i%len(sizes)])
		for j := range b {
			b[j] = byte(i*37 + j*13 + j>>9)
		}
		return b
	}
	const waves, perWave = 4, 30
	for w := 0; w < waves; w++ {
		proms := make([]*leveret.Promise[struct{}], perWave)
		for k := range proms {
			i := w*perWave + k
			proms[k] = c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{MessageID: strconv.Itoa(i), Body: content(i)}})
		}
		for k, p := range proms {
			msgOK(t, ctx, p, "publish "+strconv.Itoa(w*perWave+k))
		}
	}

	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 20})
	for i := 0; i < waves*perWave; i++ {
		d := msgNext(t, ctx, cs)
		require.Equal(t, strconv.Itoa(i), d.MessageID, "deliveries in publish order")
		require.True(t, bytes.Equal(content(i), d.Body), "message %d (%d bytes) differs from what was published", i, len(d.Body))
		msgOK(t, ctx, d.Ack(), "ack")
	}
	msgOK(t, ctx, cs.Cancel(), "cancel")
}

// TestGetEmptyQueue: basic.get-empty resolves to an empty result, on the
// client's pool and on an explicit channel.
func TestGetEmptyQueue(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	g := msgOK(t, ctx, c.Get(ops.Get{Queue: q}), "client get")
	assert.True(t, g.Empty())
	assert.Nil(t, g.Delivery)
	ch := msgChannel(t, c)
	g = msgOK(t, ctx, ch.Get(ops.Get{Queue: q}), "channel get")
	assert.True(t, g.Empty())
	assert.NoError(t, ch.Err())
}

// TestGetMessageCount: get-ok's message count is the number left behind.
func TestGetMessageCount(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	msgPublishN(t, c, q, "m", 3)
	msgWaitDepth(t, c, q, 3)
	for i := range 3 {
		d := msgGet(t, c, q, true)
		assert.Equal(t, fmt.Sprint("m", i), string(d.Body))
		assert.Equal(t, uint32(2-i), d.MessageCount, "after get %d", i)
		assert.Equal(t, q, d.RoutingKey)
		assert.False(t, d.Redelivered)
		// NoAck deliveries are not outstanding: acking one is refused.
		assert.ErrorIs(t, d.Ack().Err(), leveret.ErrUnknownDeliveryTag)
	}
	g := msgOK(t, ctx, c.Get(ops.Get{Queue: q}), "get on the emptied queue")
	assert.True(t, g.Empty())
}

// msgExchange declares a direct exchange with no bindings.
func msgExchange(t *testing.T, c *leveret.Client) string {
	t.Helper()
	x := msgName(t, "x")
	msgCleanup(t, nil, []string{x})
	msgOK(t, msgCtx(t), c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: x, Kind: ops.Direct}), "declare exchange")
	return x
}

// TestMandatoryReturnClient: an unroutable mandatory publish on the client
// fails its own promise with the whole returned message; the client's
// return handler (for explicit channels) is not called.
func TestMandatoryReturnClient(t *testing.T) {
	ctx := msgCtx(t)
	rets := make(chan ops.Return, 4)
	c := msgDial(t, leveret.WithReturnHandler(func(r ops.Return) { rets <- r }))
	x := msgExchange(t, c)
	_, err := c.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "nowhere", Mandatory: true,
		Message: interopMessage(t, "returned-from-client")}).Wait(ctx)
	var re *leveret.ReturnedError
	require.ErrorAs(t, err, &re)
	assert.ErrorIs(t, err, leveret.ErrNoRoute)
	r := re.Return
	assert.Equal(t, ops.ReplyCode(312), r.ReplyCode)
	assert.Equal(t, "NO_ROUTE", r.ReplyText)
	assert.Equal(t, x, r.Exchange)
	assert.Equal(t, "nowhere", r.RoutingKey)
	msgAssertMessage(t, interopMessageDecoded(t, "returned-from-client"), r.Message)
	// Not mandatory: the broker drops it and confirms; nothing is returned.
	msgOK(t, ctx, c.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "nowhere", Message: ops.Message{Body: []byte("dropped")}}), "publish")
	msgOK(t, ctx, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: x, Kind: ops.Direct, Passive: true}), "round trip")
	assert.Empty(t, rets)
}

// TestMandatoryReturnChannel: the same on an explicit channel with OnReturn.
func TestMandatoryReturnChannel(t *testing.T) {
	ctx := msgCtx(t)
	clientRets := make(chan ops.Return, 4)
	c := msgDial(t, leveret.WithReturnHandler(func(r ops.Return) { clientRets <- r }))
	x := msgExchange(t, c)
	ch := msgChannel(t, c)
	rets := make(chan ops.Return, 4)
	ch.OnReturn(func(r ops.Return) { rets <- r })
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "void.key", Mandatory: true,
		Message: interopMessage(t, "returned-from-channel")}), "publish")
	select {
	case r := <-rets:
		assert.Equal(t, ops.ReplyCode(312), r.ReplyCode)
		assert.Equal(t, "NO_ROUTE", r.ReplyText)
		assert.Equal(t, x, r.Exchange)
		assert.Equal(t, "void.key", r.RoutingKey)
		msgAssertMessage(t, interopMessageDecoded(t, "returned-from-channel"), r.Message)
	case <-ctx.Done():
		t.Fatal("no return")
	}
	// A returned body larger than frame_max comes back whole.
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{Exchange: x, RoutingKey: "void.big", Mandatory: true,
		Message: ops.Message{MessageID: "big", Body: big}}), "publish big")
	select {
	case r := <-rets:
		assert.Equal(t, "void.big", r.RoutingKey)
		assert.Equal(t, "big", r.Message.MessageID)
		assert.True(t, bytes.Equal(big, r.Message.Body), "returned body differs (%d bytes)", len(r.Message.Body))
	case <-ctx.Done():
		t.Fatal("no return of the big message")
	}
	assert.NoError(t, ch.Err(), "a return does not close the channel")
	assert.Empty(t, clientRets, "OnReturn replaces the client's handler on this channel")
}

// TestPublishMissingExchange: a publish the broker refuses (404) fails the
// next wait point on the channel and closes it with the *ChannelError.
func TestPublishMissingExchange(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	missing := msgName(t, "missing")
	ch := msgChannel(t, c)

	// Written to the socket: the publish itself succeeds locally. The
	// declare is issued at once, before the broker can have answered: one
	// issued after the channel ended would fail with the 404 itself.
	published := ch.Publish(ctx, ops.Publish{Exchange: missing, Message: ops.Message{Body: []byte("x")}})
	declared := ch.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true})
	msgOK(t, ctx, published, "publish")
	_, err := declared.Wait(ctx)
	require.Error(t, err)
	assert.ErrorIs(t, err, leveret.ErrNotFound)
	assert.ErrorIs(t, err, leveret.ErrNotExecuted, "the declare behind the failed publish was discarded")
	assert.Contains(t, err.Error(), missing)

	<-ch.Done()
	var ce *leveret.ChannelError
	require.ErrorAs(t, ch.Err(), &ce)
	assert.Equal(t, leveret.ReplyCode(404), ce.Code)
	assert.Equal(t, uint16(60), ce.ClassID, "basic")
	assert.Equal(t, uint16(40), ce.MethodID, "publish")
	assert.Contains(t, ce.Text, missing)
	assert.ErrorIs(t, ch.Err(), leveret.ErrNotFound)

	// The channel refuses further work; the connection carries on.
	_, err = ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("y")}}).Wait(ctx)
	assert.Error(t, err, "publish on the closed channel")
	msgOK(t, ctx, c.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "client still works")
	assert.NoError(t, c.Err())
}

// TestPublishMissingExchangeClient: on the client's own channels the failure
// stays with the failing operation: the publish fails with its own 404, the
// pool replaces the channel, the operation queued behind the publish is
// re-issued and fails on its own, and later publishes arrive.
func TestPublishMissingExchangeClient(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	missing := msgName(t, "missing")
	published := c.Publish(ctx, ops.Publish{Exchange: missing, Message: ops.Message{Body: []byte("x")}})
	// Same exchange, so it goes out behind the publish on the same channel,
	// which the broker closes: it is re-issued and fails with its own 404.
	declared := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: missing, Passive: true})
	_, err := published.Wait(ctx)
	var ce *leveret.ChannelError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "basic.publish", ce.Method())
	assert.ErrorIs(t, err, leveret.ErrNotFound)
	_, err = declared.Wait(ctx)
	require.ErrorIs(t, err, leveret.ErrNotFound)
	assert.NotErrorIs(t, err, leveret.ErrNotExecuted)
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, uint16(40), ce.ClassID, "exchange")
	assert.Equal(t, uint16(10), ce.MethodID, "declare")

	for i := range 20 {
		msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: fmt.Appendf(nil, "after-%d", i)}}), "publish after")
	}
	msgWaitDepth(t, c, q, 20)
	assert.NoError(t, c.Err())
}

// TestPublishUnencodableHeaders: a headers table leveret cannot encode
// fails that publish alone; nothing half-written reaches the broker.
func TestPublishUnencodableHeaders(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	ch := msgChannel(t, c)
	bad := []ops.Table{
		{"too_big": uint64(1 << 63)},                  // above MaxInt64
		{"struct": struct{}{}},                        // no AMQP type
		{"nested": ops.Table{"deep": []any{uint(1)}}}, // uint is not supported either
	}
	for _, h := range bad {
		_, err := c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Headers: h, Body: []byte("bad")}}).Wait(ctx)
		assert.Error(t, err, "client publish with %v", h)
		_, err = ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Headers: h, Body: []byte("bad")}}).Wait(ctx)
		assert.Error(t, err, "channel publish with %v", h)
	}
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: []byte("good")}}), "good publish")
	msgOK(t, ctx, ch.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}), "channel still works")
	msgWaitDepth(t, c, q, 1)
	d := msgGet(t, c, q, true)
	assert.Equal(t, "good", string(d.Body))
	assert.NoError(t, ch.Err())
	assert.NoError(t, c.Err())
}
