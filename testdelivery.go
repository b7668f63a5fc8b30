package leveret

import "github.com/leveret-mq/leveret/ops"

// NewTestDelivery returns a delivery that did not come from a broker, for
// unit tests of code that receives and settles deliveries (the role of
// amqp091-go's Acknowledger). Its Ack, Nack and Reject send nothing: each
// calls record on the caller's goroutine with what it asked for (the
// Delivery, its DeliveryTag, Kind, Multiple and Requeue; Count 1), and the
// returned promise settles with record's error. record may be nil: the
// settlements then succeed and go nowhere. The delivery's Channel is nil;
// no hook sees it. Set its other fields (ConsumerTag, Redelivered, ...) as
// the test needs. m, its body and headers included, stays the caller's.
func NewTestDelivery(m ops.Message, tag uint64, record func(Settlement) error) *Delivery {
	if record == nil {
		record = func(Settlement) error { return nil }
	}
	return &Delivery{Message: m, DeliveryTag: tag, on: &link{record: record}}
}
