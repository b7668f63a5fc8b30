package mux

import (
	"encoding/binary"
	"testing"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

type countingHandler struct{ n int }

func (h *countingHandler) Async(m proto.Method, msg *ops.Message) { h.n += len(msg.Body) }
func (h *countingHandler) Closed(error)                           {}
func (h *countingHandler) Oversized(proto.Method, uint64)         {}

// BenchmarkDeliveryDecode measures the reader's per-message work for a
// basic.deliver with typical properties: method decode, content header,
// body assembly and the handler call. The root adds one allocation (the
// Delivery) on top of what this reports.
func BenchmarkDeliveryDecode(b *testing.B) {
	deliver, _ := proto.AppendMethodFrame(nil, 1, &proto.BasicDeliver{ConsumerTag: "ctag-1", DeliveryTag: 1, Exchange: "events", RoutingKey: "orders.created"})
	msg := ops.Message{ContentType: "application/json", DeliveryMode: ops.Persistent, MessageID: "id", AppID: "bench", Body: make([]byte, 100)}
	header, _ := proto.AppendContentHeader(nil, 1, proto.ClassBasic, 100, &msg)
	body := proto.AppendBodyFrames(nil, 1, 131072, msg.Body)
	payload := func(frame []byte) []byte { return frame[7 : len(frame)-1] }
	h := &countingHandler{}
	ch := &Channel{ID: 1, c: &Conn{cfg: Config{MaxMessageSize: DefaultMaxMessageSize}}, h: h}
	// The delivery tag, after the method id and the consumer tag: the
	// reader refuses a tag that does not increase.
	tagAt := 4 + 1 + len("ctag-1")
	tag := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		tag++
		binary.BigEndian.PutUint64(payload(deliver)[tagAt:], tag)
		m, err := decodeChannelMethod(ch, payload(deliver))
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.handleMethod(m); err != nil {
			b.Fatal(err)
		}
		if err := ch.handleContent(proto.FrameHeader, payload(header)); err != nil {
			b.Fatal(err)
		}
		if err := ch.handleContent(proto.FrameBody, payload(body)); err != nil {
			b.Fatal(err)
		}
	}
	if h.n == 0 {
		b.Fatal("handler saw no bodies")
	}
}
