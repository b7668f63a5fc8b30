package leveret

import "github.com/leveret-mq/leveret/ops"

// Stream consumers resume where they were. RabbitMQ stamps every delivery
// from a stream queue with its offset in the x-stream-offset header. A
// consumer remembers the offset of the last delivery it handed to the
// user's side (its Deliveries buffer, which survives a reconnect), and a
// restart after a reconnect asks for the next one, instead of the
// x-stream-offset the user first gave ("first", a timestamp, or none,
// which means "next": a gap, or a second copy of everything).

// streamOffsetHeader names both the delivery header and the consume
// argument.
const streamOffsetHeader = "x-stream-offset"

// noteStreamOffset records d's stream offset, if it carries one. It runs
// on the reader goroutine as d is handed over.
func (cs *Consumer) noteStreamOffset(d *Delivery) {
	v, ok := d.Headers[streamOffsetHeader]
	if !ok {
		return
	}
	var off int64
	switch v := v.(type) {
	case int64:
		off = v
	case int32:
		off = int64(v)
	case int:
		off = int64(v)
	case uint32:
		off = int64(v)
	default:
		return // not an offset: leave the consume arguments as given
	}
	if off >= 0 {
		cs.streamNext.Store(off + 1)
	}
}

// restartOptions is what a restart of the consumer sends: its options,
// with x-stream-offset moved past the last delivery handed over, if it has
// received one from a stream. The user's Args table is not modified.
func (cs *Consumer) restartOptions(o ops.Consume) ops.Consume {
	next := cs.streamNext.Load()
	if next == 0 {
		return o
	}
	args := make(ops.Table, len(o.Args)+1)
	for k, v := range o.Args {
		args[k] = v
	}
	args[streamOffsetHeader] = next
	o.Args = args
	return o
}
