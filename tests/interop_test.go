package tests

// Interoperability with amqp091-go, both directions: every basic property
// and a headers table holding every AMQP field type survive the trip
// through RabbitMQ, and each client decodes what the other encoded to the
// exact Go values asserted below.
//
// The 14 basic properties of AMQP 0-9-1 are content-type, content-encoding,
// headers, delivery-mode, priority, correlation-id, reply-to, expiration,
// message-id, timestamp, type, user-id, app-id and cluster-id. cluster-id is
// deprecated ("reserved") in 0-9-1: neither ops.Message nor amqp.Publishing
// has a field for it, so the 13 others are what can be compared.
//
// Lossy or type-changing mappings (asserted, not just tolerated):
//   - timestamps (the property and 'T' table values) carry whole seconds:
//     sub-second precision and the zone are lost. leveret decodes them in
//     UTC; amqp091-go decodes them with time.Unix, in time.Local.
//   - leveret encodes Go int, int64 and uint64 as 'l' (signed 64 bit); they
//     come back as int64 in both clients. uint64 above MaxInt64 is refused.
//   - amqp091-go encodes Go int as 'I' (signed 32 bit), silently dropping
//     the high bits; leveret decodes 'I' as int32.
//   - Go's byte is uint8, so amqp091-go's byte and leveret's uint8 are the
//     same wire type 'B'; int8 is 'b' in both.
//   - ops.Decimal and amqp.Decimal are distinct Go types for 'D'; nested
//     tables are ops.Table and amqp.Table; leveret also encodes
//     map[string]any as a table, which decodes as a Table on both sides.
//   - An empty field array decodes as []any{} in leveret but as a nil []any
//     in amqp091-go.
//   - An empty top-level headers table is nil in leveret (not exercised
//     here: the headers are never empty).

import (
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// interopTime has nanoseconds and a non-UTC zone, both lost on the wire.
var interopTime = time.Date(2024, time.May, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+2", 2*3600))

// msgUser is the user in the broker URL: the user-id property must match it
// or RabbitMQ closes the channel with 406.
func msgUser(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(msgURL())
	require.NoError(t, err)
	return u.User.Username()
}

// leveretHeaders holds every Go type leveret can encode.
func leveretHeaders() ops.Table {
	return ops.Table{
		"bool_true":    true,
		"bool_false":   false,
		"int8":         int8(-8),
		"uint8":        uint8(200),
		"int16":        int16(-1600),
		"uint16":       uint16(60000),
		"int32":        int32(-320000),
		"uint32":       uint32(4000000000),
		"int64":        int64(-1 << 40),
		"int":          int(1<<40 + 3),
		"uint64":       uint64(1 << 50),
		"float32":      float32(3.25),
		"float64":      -2.5e-300,
		"decimal":      ops.Decimal{Scale: 3, Value: -123456},
		"string":       "héllo wörld",
		"empty_string": "",
		"bytes":        []byte{0, 1, 2, 0xfe, 0xff},
		"empty_bytes":  []byte{},
		"time":         interopTime,
		"table": ops.Table{
			"a":      int32(1),
			"deeper": ops.Table{"b": "c", "n": int16(-2)},
			"empty":  ops.Table{},
		},
		"map": map[string]any{"k": "v"},
		"array": []any{
			int32(1), "two", []any{int8(3), ops.Table{"four": 4.0}, []any{}},
			nil, true, []byte("x"), uint16(7), interopTime,
		},
		"empty_array": []any{},
		"void":        nil,
	}
}

// leveretHeadersAs091 is what amqp091-go decodes from leveretHeaders.
func leveretHeadersAs091() amqp.Table {
	sec := time.Unix(interopTime.Unix(), 0) // amqp091-go: whole seconds, time.Local
	return amqp.Table{
		"bool_true":    true,
		"bool_false":   false,
		"int8":         int8(-8),
		"uint8":        uint8(200),
		"int16":        int16(-1600),
		"uint16":       uint16(60000),
		"int32":        int32(-320000),
		"uint32":       uint32(4000000000),
		"int64":        int64(-1 << 40),
		"int":          int64(1<<40 + 3), // 'l'
		"uint64":       int64(1 << 50),   // 'l'
		"float32":      float32(3.25),
		"float64":      -2.5e-300,
		"decimal":      amqp.Decimal{Scale: 3, Value: -123456},
		"string":       "héllo wörld",
		"empty_string": "",
		"bytes":        []byte{0, 1, 2, 0xfe, 0xff},
		"empty_bytes":  []byte{},
		"time":         sec,
		"table": amqp.Table{
			"a":      int32(1),
			"deeper": amqp.Table{"b": "c", "n": int16(-2)},
			"empty":  amqp.Table{},
		},
		"map": amqp.Table{"k": "v"},
		"array": []any{
			int32(1), "two", []any{int8(3), amqp.Table{"four": 4.0}, []any(nil)},
			nil, true, []byte("x"), uint16(7), sec,
		},
		"empty_array": []any(nil), // amqp091-go: an empty array is nil
		"void":        nil,
	}
}

// interopMessage sets every property ops.Message has.
func interopMessage(t *testing.T, body string) ops.Message {
	return ops.Message{
		ContentType:     "application/x-leveret-test",
		ContentEncoding: "identity",
		Headers:         leveretHeaders(),
		DeliveryMode:    ops.Persistent,
		Priority:        7,
		CorrelationID:   "corr-42",
		ReplyTo:         "reply.queue",
		Expiration:      "3600000",
		MessageID:       "msg-42",
		Timestamp:       interopTime,
		Type:            "leveret.test",
		UserID:          msgUser(t),
		AppID:           "leveret-tests",
		Body:            []byte(body),
	}
}

// assert091Delivery checks what amqp091-go decoded from interopMessage.
func assert091Delivery(t *testing.T, d amqp.Delivery, q, body string) {
	t.Helper()
	assert.Equal(t, "application/x-leveret-test", d.ContentType)
	assert.Equal(t, "identity", d.ContentEncoding)
	assert.Equal(t, uint8(2), d.DeliveryMode)
	assert.Equal(t, uint8(7), d.Priority)
	assert.Equal(t, "corr-42", d.CorrelationId)
	assert.Equal(t, "reply.queue", d.ReplyTo)
	assert.Equal(t, "3600000", d.Expiration)
	assert.Equal(t, "msg-42", d.MessageId)
	assert.Equal(t, time.Unix(interopTime.Unix(), 0), d.Timestamp, "whole seconds, in time.Local")
	assert.Equal(t, "leveret.test", d.Type)
	assert.Equal(t, msgUser(t), d.UserId)
	assert.Equal(t, "leveret-tests", d.AppId)
	assert.Equal(t, []byte(body), d.Body)
	assert.Equal(t, "", d.Exchange)
	assert.Equal(t, q, d.RoutingKey)
	assert.False(t, d.Redelivered)
	want := leveretHeadersAs091()
	assert.Equal(t, want, d.Headers)
	for k, v := range want { // pinpoint a mismatch
		assert.Equal(t, v, d.Headers[k], "header %q", k)
	}
}

// TestInteropLeveretToAMQP091 publishes with leveret (client pool and an
// explicit channel) and receives with amqp091-go (Get and Consume).
func TestInteropLeveretToAMQP091(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)

	msgOK(t, ctx, c.Publish(ctx, ops.Publish{RoutingKey: q, Message: interopMessage(t, "from-client")}), "client publish")
	ch := msgChannel(t, c)
	msgOK(t, ctx, ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: interopMessage(t, "from-channel")}), "channel publish")
	msgWaitDepth(t, c, q, 2)

	_, ach := msgDial091(t)
	got, ok, err := ach.Get(q, false)
	require.NoError(t, err)
	require.True(t, ok, "amqp091-go get found no message")
	assert091Delivery(t, got, q, "from-client")
	assert.Equal(t, uint32(1), got.MessageCount)
	require.NoError(t, got.Ack(false))

	dels, err := ach.ConsumeWithContext(ctx, q, "interop", false, false, false, false, nil)
	require.NoError(t, err)
	select {
	case d := <-dels:
		assert091Delivery(t, d, q, "from-channel")
		require.NoError(t, d.Ack(false))
	case <-ctx.Done():
		t.Fatal("amqp091-go consumer received nothing")
	}
	require.NoError(t, ach.Cancel("interop", false))
	require.NoError(t, ach.Close())
	assert.Equal(t, uint32(0), msgDepth(t, c, q))
}

// amqp091Headers holds every Go type amqp091-go can encode.
func amqp091Headers() amqp.Table {
	return amqp.Table{
		"bool_true":   true,
		"bool_false":  false,
		"int8":        int8(-8),
		"byte":        byte(200),
		"int16":       int16(-1600),
		"uint16":      uint16(60000),
		"int":         int(-5),
		"int_big":     int(1<<33 + 7), // 'I': amqp091-go keeps the low 32 bits
		"int32":       int32(-320000),
		"uint32":      uint32(4000000000),
		"int64":       int64(-1 << 40),
		"float32":     float32(3.25),
		"float64":     -2.5e-300,
		"decimal":     amqp.Decimal{Scale: 3, Value: -123456},
		"string":      "héllo wörld",
		"bytes":       []byte{0, 1, 2, 0xfe, 0xff},
		"empty_bytes": []byte{},
		"time":        interopTime,
		"table": amqp.Table{
			"a":      int32(1),
			"deeper": amqp.Table{"b": "c", "n": int16(-2)},
			"empty":  amqp.Table{},
		},
		"array": []any{
			int32(1), "two", []any{int8(3), amqp.Table{"four": 4.0}, []any{}},
			nil, true, []byte("x"), uint16(7), interopTime,
		},
		"empty_array": []any{},
		"void":        nil,
	}
}

// amqp091HeadersAsLeveret is what leveret decodes from amqp091Headers.
func amqp091HeadersAsLeveret() ops.Table {
	sec := time.Unix(interopTime.Unix(), 0).UTC() // leveret: whole seconds, UTC
	return ops.Table{
		"bool_true":   true,
		"bool_false":  false,
		"int8":        int8(-8),
		"byte":        uint8(200),
		"int16":       int16(-1600),
		"uint16":      uint16(60000),
		"int":         int32(-5),
		"int_big":     int32(7),
		"int32":       int32(-320000),
		"uint32":      uint32(4000000000),
		"int64":       int64(-1 << 40),
		"float32":     float32(3.25),
		"float64":     -2.5e-300,
		"decimal":     ops.Decimal{Scale: 3, Value: -123456},
		"string":      "héllo wörld",
		"bytes":       []byte{0, 1, 2, 0xfe, 0xff},
		"empty_bytes": []byte{},
		"time":        sec,
		"table": ops.Table{
			"a":      int32(1),
			"deeper": ops.Table{"b": "c", "n": int16(-2)},
			"empty":  ops.Table{},
		},
		"array": []any{
			int32(1), "two", []any{int8(3), ops.Table{"four": 4.0}, []any{}},
			nil, true, []byte("x"), uint16(7), sec,
		},
		"empty_array": []any{},
		"void":        nil,
	}
}

// amqp091Publishing sets every property amqp.Publishing has.
func amqp091Publishing(t *testing.T, body string) amqp.Publishing {
	return amqp.Publishing{
		ContentType:     "text/x-amqp091",
		ContentEncoding: "gzip",
		Headers:         amqp091Headers(),
		DeliveryMode:    amqp.Persistent,
		Priority:        9,
		CorrelationId:   "corr-091",
		ReplyTo:         "reply.queue.091",
		Expiration:      "86400000",
		MessageId:       "id-091",
		Timestamp:       interopTime,
		Type:            "amqp091.test",
		UserId:          msgUser(t),
		AppId:           "amqp091-go",
		Body:            []byte(body),
	}
}

// assertLeveretDelivery checks what leveret decoded from amqp091Publishing.
func assertLeveretDelivery(t *testing.T, d *leveret.Delivery, q, body string) {
	t.Helper()
	want := ops.Message{
		ContentType:     "text/x-amqp091",
		ContentEncoding: "gzip",
		Headers:         amqp091HeadersAsLeveret(),
		DeliveryMode:    ops.Persistent,
		Priority:        9,
		CorrelationID:   "corr-091",
		ReplyTo:         "reply.queue.091",
		Expiration:      "86400000",
		MessageID:       "id-091",
		Timestamp:       time.Unix(interopTime.Unix(), 0).UTC(),
		Type:            "amqp091.test",
		UserID:          msgUser(t),
		AppID:           "amqp091-go",
		Body:            []byte(body),
	}
	assert.Equal(t, want, d.Message)
	for k, v := range want.Headers { // pinpoint a mismatch
		assert.Equal(t, v, d.Headers[k], "header %q", k)
	}
	assert.Len(t, d.Headers, len(want.Headers))
	assert.Equal(t, time.UTC, d.Timestamp.Location())
	assert.Equal(t, "", d.Exchange)
	assert.Equal(t, q, d.RoutingKey)
	assert.False(t, d.Redelivered)
}

// TestInteropAMQP091ToLeveret publishes with amqp091-go and receives with
// leveret (Get and Consume).
func TestInteropAMQP091ToLeveret(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)

	_, ach := msgDial091(t)
	for _, body := range []string{"for-get", "for-consume"} {
		require.NoError(t, ach.PublishWithContext(ctx, "", q, false, false, amqp091Publishing(t, body)))
	}
	require.NoError(t, ach.Close())
	msgWaitDepth(t, c, q, 2)

	d := msgGet(t, c, q, false)
	assertLeveretDelivery(t, d, q, "for-get")
	assert.Equal(t, uint32(1), d.MessageCount)
	assert.Empty(t, d.ConsumerTag)
	_, err := d.Ack().Wait(ctx)
	require.NoError(t, err)

	cs := msgConsume(t, c, ops.Consume{Queue: q, Prefetch: 1})
	d = msgNext(t, ctx, cs)
	assertLeveretDelivery(t, d, q, "for-consume")
	assert.Equal(t, cs.Tag(), d.ConsumerTag)
	_, err = d.Ack().Wait(ctx)
	require.NoError(t, err)
	_, err = cs.Cancel().Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(0), msgDepth(t, c, q))
}

// TestInteropRoundTripLeveretOnly checks that leveret reads back its own
// headers table with the documented decoded types.
func TestInteropRoundTripLeveretOnly(t *testing.T) {
	ctx := msgCtx(t)
	c := msgDial(t)
	q := msgQueue(t, c)
	sent := interopMessage(t, "self")
	_, err := c.Publish(ctx, ops.Publish{RoutingKey: q, Message: sent}).Wait(ctx)
	require.NoError(t, err)
	msgWaitDepth(t, c, q, 1)
	d := msgGet(t, c, q, true)
	msgAssertMessage(t, interopMessageDecoded(t, "self"), d.Message)
}

// interopMessageDecoded is interopMessage(t, body) as leveret decodes it.
func interopMessageDecoded(t *testing.T, body string) ops.Message {
	sec := time.Unix(interopTime.Unix(), 0).UTC()
	m := interopMessage(t, body)
	m.Timestamp = sec
	m.Headers["int"] = int64(1<<40 + 3)
	m.Headers["uint64"] = int64(1 << 50)
	m.Headers["time"] = sec
	m.Headers["map"] = ops.Table{"k": "v"}
	m.Headers["array"] = []any{
		int32(1), "two", []any{int8(3), ops.Table{"four": 4.0}, []any{}},
		nil, true, []byte("x"), uint16(7), sec,
	}
	return m
}

// msgAssertMessage compares two messages, then header by header to
// pinpoint a mismatch.
func msgAssertMessage(t *testing.T, want, got ops.Message) {
	t.Helper()
	if assert.Equal(t, want, got) {
		return
	}
	for k, v := range want.Headers {
		assert.Equal(t, v, got.Headers[k], "header %q", k)
	}
}
