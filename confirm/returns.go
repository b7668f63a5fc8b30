package confirm

import "github.com/leveret-mq/leveret/ops"

// SeqHeader is the message header in which a Publisher sends the sequence
// number of a Mandatory publish, so that a basic.return is linked to the
// publish it returns.
//
// Why a header: basic.return names no publish, and wire order does not
// name one either. RabbitMQ sends the return at once, but the channel
// batches the confirmations it has gathered (from queues, and the returned
// publish's own) and sends a multiple ack for the contiguous part before
// single acks for the rest, so other publishes' confirmations can come
// between a return and the confirmation of the returned publish. Observed on
// RabbitMQ 3.10: return of publish 111, then ack 109 multiple, then ack
// 111. The header makes the link exact.
//
// Consumers of mandatory messages that are routed see the header; Publish
// does not modify the caller's Headers table (it sends a copy), and the
// header is removed from the Message in Outcome.Return.
const SeqHeader = "x-leveret-publish-seq"

// withSeq returns a copy of h with SeqHeader set to seq.
func withSeq(h ops.Table, seq uint64) ops.Table {
	out := make(ops.Table, len(h)+1)
	for k, v := range h {
		out[k] = v
	}
	out[SeqHeader] = int64(seq)
	return out
}

// takeSeq removes SeqHeader from a returned message and returns its value.
func takeSeq(m *ops.Message) (uint64, bool) {
	v, ok := m.Headers[SeqHeader]
	if !ok {
		return 0, false
	}
	delete(m.Headers, SeqHeader)
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
	switch n := v.(type) {
	case int64:
		return uint64(n), n > 0
	case int32:
		return uint64(n), n > 0
	case uint32:
		return uint64(n), n > 0
	}
	return 0, false
}
