package proto

import "github.com/leveret-mq/leveret/ops"

// The delivery path decodes the same consumer tag, exchange, routing key
// and usually the same property strings for every message on a channel.
// These variants keep the previous string when the bytes are equal, so a
// steady stream of deliveries allocates only its bodies.

// shortstrLike is shortstr, returning prev when the bytes equal it.
func (d *decoder) shortstrLike(prev string) string {
	n := d.octet()
	b := d.take(uint64(n), "shortstr")
	if string(b) == prev { // compiled without allocating
		return prev
	}
	return string(b)
}

// DecodeReusing is Decode, keeping m's current strings where the new
// values are equal. m must not be shared with another goroutine.
func (m *BasicDeliver) DecodeReusing(args []byte) error {
	d := decoder{src: args}
	m.ConsumerTag = d.shortstrLike(m.ConsumerTag)
	m.DeliveryTag = d.longlong()
	m.Redelivered = d.octet()&1 != 0
	m.Exchange = d.shortstrLike(m.Exchange)
	m.RoutingKey = d.shortstrLike(m.RoutingKey)
	return d.finish()
}

// DecodeContentHeaderReusing is DecodeContentHeader, taking each string
// property from prev when the bytes are equal. Headers are always decoded
// afresh: the receiver may modify them.
func DecodeContentHeaderReusing(payload []byte, msg, prev *ops.Message) (classID uint16, bodySize uint64, err error) {
	return decodeContentHeader(payload, msg, prev)
}
