package leveret

import (
	"fmt"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
)

// A message over WithMaxMessageSize used to end the connection (506); with
// reconnecting on, the broker then delivered it again on the next one, for
// ever, and the messages ahead of it were redelivered each time. Now mux
// skips its body as it arrives (nothing is buffered) and hands it here.

// oversized refuses a delivery or a returned message of size octets that
// came on link l over the size limit, and reports it (EventMessageRefused).
// It runs on the reader.
func (ch *Channel) oversized(l *link, m proto.Method, size uint64) {
	limit := ch.c.cfg.maxMessageSize
	var err error
	switch m := m.(type) {
	case *proto.BasicDeliver:
		ch.mu.Lock()
		cs := ch.consumers[m.ConsumerTag]
		ch.mu.Unlock()
		queue, what := "", "rejected without requeue"
		if cs != nil {
			queue = cs.queue()
		}
		if cs != nil && cs.noAck {
			what = "dropped (the consumer is no-ack)"
		} else {
			l.mc.Call(&mux.Request{Method: &proto.BasicReject{DeliveryTag: m.DeliveryTag}})
		}
		err = fmt.Errorf("%w: a delivery of %d bytes from queue %q (consumer %q, delivery tag %d) is over the limit of %d bytes (WithMaxMessageSize); %s",
			ErrMessageTooLarge, size, queue, m.ConsumerTag, m.DeliveryTag, limit, what)
	case *proto.BasicReturn:
		ch.c.refusedReturn(m, size)
		return
	default:
		return
	}
	ch.c.emit(Event{Kind: EventMessageRefused, Err: err})
}

// refusedReturn reports a returned message of size octets over the size
// limit, which was dropped (EventMessageRefused). It runs on the reader.
func (c *Client) refusedReturn(m *proto.BasicReturn, size uint64) {
	c.emit(Event{Kind: EventMessageRefused, Err: fmt.Errorf("%w: a returned message of %d bytes (exchange %q, routing key %q) is over the limit of %d bytes (WithMaxMessageSize); dropped",
		ErrMessageTooLarge, size, m.Exchange, m.RoutingKey, c.cfg.maxMessageSize)})
}
