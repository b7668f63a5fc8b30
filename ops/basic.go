package ops

// Publish sends a message to an exchange.
type Publish struct {
	Exchange   string // "" is the default exchange, which routes by queue name
	RoutingKey string
	// Mandatory asks the broker to return the message (basic.return) when
	// no queue takes it, instead of dropping it.
	Mandatory bool
	Message   Message
}

// Return is a mandatory message the broker could not route.
type Return struct {
	ReplyCode  ReplyCode // usually 312 NO_ROUTE
	ReplyText  string
	Exchange   string
	RoutingKey string
	Message    Message
}

// Get fetches one message from a queue (basic.get), if there is one.
type Get struct {
	Queue string
	NoAck bool // the broker forgets the message as it sends it: no Ack needed or allowed
}

// Consume starts a consumer on a queue.
type Consume struct {
	Queue string
	// ConsumerTag names the consumer on its channel; leveret makes a unique
	// one when it is empty.
	ConsumerTag string
	NoAck       bool // deliveries need no acknowledgement (and may be lost)
	Exclusive   bool // the only consumer on the queue
	NoLocal     bool // not supported by RabbitMQ; sent as given
	// Prefetch, when not zero, sends basic.qos with this prefetch count for
	// the consumer before it starts: the broker sends at most this many
	// unacknowledged deliveries, and it bounds the delivery buffer.
	Prefetch uint16
	Args     Table // e.g. "x-priority", "x-stream-offset"
}

// Qos limits the unacknowledged deliveries the broker sends (basic.qos).
type Qos struct {
	PrefetchCount uint16 // messages; 0 means no limit
	PrefetchSize  uint32 // bytes; 0 means no limit (RabbitMQ supports only 0)
	// Global applies the limit to the whole channel rather than to each
	// consumer started after it (RabbitMQ's reading of the flag). It is
	// deprecated in RabbitMQ 4.x: where the broker denies the global_qos
	// feature it accepts the flag and ignores it (each consumer gets the
	// limit), and some 4.3 builds refuse it. Prefer a per-consumer limit.
	Global bool
}

// Ack acknowledges deliveries.
type Ack struct {
	DeliveryTag uint64
	Multiple    bool // also every earlier unacknowledged delivery on the channel
}

// Nack rejects deliveries (a RabbitMQ extension).
type Nack struct {
	DeliveryTag uint64
	Multiple    bool // also every earlier unacknowledged delivery on the channel
	Requeue     bool // put them back in the queue rather than discarding or dead-lettering
}

// Reject rejects one delivery.
type Reject struct {
	DeliveryTag uint64
	Requeue     bool // put it back in the queue rather than discarding or dead-lettering
}

// Recover asks the broker to redeliver every unacknowledged delivery on the channel.
type Recover struct {
	Requeue bool // RabbitMQ requires true
}
