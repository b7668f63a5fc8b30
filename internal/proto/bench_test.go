package proto

import (
	"strconv"
	"testing"

	"github.com/leveret-mq/leveret/ops"
)

func benchMessage(bodySize int) ops.Message {
	return ops.Message{
		ContentType:   "application/json",
		DeliveryMode:  ops.Persistent,
		CorrelationID: "c0ffee",
		MessageID:     "msg-000001",
		Timestamp:     testTime,
		Headers:       ops.Table{"x-trace": "abc", "attempt": int32(1)},
		Body:          make([]byte, bodySize),
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	for _, size := range []int{128, 10000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			msg := benchMessage(size)
			pub := BasicPublish{Exchange: "orders", RoutingKey: "order.created"}
			buf := make([]byte, 0, 64<<10)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				var err error
				if buf, err = AppendPublish(buf[:0], 1, 131072, &pub, &msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeDeliver decodes a basic.deliver method frame and its
// content header, as a consumer does for every message.
func BenchmarkDecodeDeliver(b *testing.B) {
	method, err := AppendMethodFrame(nil, 1, &BasicDeliver{
		ConsumerTag: "ctag-1", DeliveryTag: 42, Exchange: "orders", RoutingKey: "order.created",
	})
	if err != nil {
		b.Fatal(err)
	}
	msg := benchMessage(0)
	header, err := AppendContentHeader(nil, 1, ClassBasic, 128, &msg)
	if err != nil {
		b.Fatal(err)
	}
	methodPayload, headerPayload := method[7:len(method)-1], header[7:len(header)-1]
	b.ReportAllocs()
	for b.Loop() {
		m, err := DecodeMethod(methodPayload)
		if err != nil {
			b.Fatal(err)
		}
		_ = m.(*BasicDeliver)
		var got ops.Message
		if _, _, err := DecodeContentHeader(headerPayload, &got); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendMethodFrame(b *testing.B) {
	buf := make([]byte, 0, 256)
	ack := &BasicAck{DeliveryTag: 1}
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendMethodFrame(buf[:0], 1, ack)
	}
}
