package proto

import (
	"testing"

	"github.com/leveret-mq/leveret/ops"
)

// The benchmarks in this file follow the paths the client takes for every
// message, with the messages bench/ publishes: a 100-byte body and either no
// properties or the usual few strings.

// BenchmarkPublishPath encodes basic.publish, its content header and body
// into a reused output buffer, as Conn.enqueuePublish does. Once the buffer
// has grown it must not allocate.
func BenchmarkPublishPath(b *testing.B) {
	cases := []struct {
		name string
		msg  ops.Message
	}{
		{"plain100", ops.Message{Body: make([]byte, 100)}},
		{"props100", ops.Message{ContentType: "application/json", DeliveryMode: ops.Persistent,
			MessageID: "msg-000001", AppID: "bench", Body: make([]byte, 100)}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			pub := BasicPublish{RoutingKey: "bench-queue"}
			buf := make([]byte, 0, 64<<10)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.msg.Body)))
			for b.Loop() {
				out, err := AppendPublish(buf, 1, 131072, &pub, &c.msg)
				if err != nil {
					b.Fatal(err)
				}
				// Batch like the writer does: reset once the buffer is full.
				if buf = out; cap(buf)-len(buf) < 512 {
					buf = buf[:0]
				}
			}
		})
	}
}

// BenchmarkDeliverPath decodes basic.deliver and its content header the way
// the reader does on a busy channel: into reused structs, keeping equal
// strings from the previous delivery, then copies the body. The body is the
// only allocation that must remain (headers tables are decoded afresh).
func BenchmarkDeliverPath(b *testing.B) {
	cases := []struct {
		name string
		msg  ops.Message
	}{
		{"plain100", ops.Message{Body: make([]byte, 100)}},
		{"props100", ops.Message{ContentType: "application/json", DeliveryMode: ops.Persistent,
			MessageID: "msg-000001", AppID: "bench", Body: make([]byte, 100)}},
		{"headers100", ops.Message{ContentType: "application/json", Headers: ops.Table{"x-trace": "abc"},
			Body: make([]byte, 100)}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			method, err := AppendMethodFrame(nil, 1, &BasicDeliver{ConsumerTag: "ctag-1", DeliveryTag: 42,
				Exchange: "", RoutingKey: "bench-queue"})
			if err != nil {
				b.Fatal(err)
			}
			header, err := AppendContentHeader(nil, 1, ClassBasic, uint64(len(c.msg.Body)), &c.msg)
			if err != nil {
				b.Fatal(err)
			}
			body := AppendBodyFrames(nil, 1, 131072, c.msg.Body)
			methodArgs := method[7+4 : len(method)-1] // after class and method ids
			headerPayload, bodyPayload := header[7:len(header)-1], body[7:len(body)-1]
			var deliver BasicDeliver
			var msg, prev ops.Message
			b.ReportAllocs()
			for b.Loop() {
				if err := deliver.DecodeReusing(methodArgs); err != nil {
					b.Fatal(err)
				}
				msg = ops.Message{}
				_, size, err := DecodeContentHeaderReusing(headerPayload, &msg, &prev)
				if err != nil {
					b.Fatal(err)
				}
				msg.Body = append(make([]byte, 0, size), bodyPayload...)
				prev = msg // as the reader keeps the last properties
				prev.Body, prev.Headers = nil, nil
			}
			if len(msg.Body) != len(c.msg.Body) || deliver.DeliveryTag != 42 {
				b.Fatal("decoded the wrong thing")
			}
		})
	}
}
