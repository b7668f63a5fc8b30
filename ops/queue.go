package ops

// QueueDeclare creates a queue, or checks that an existing one has the same
// settings (406 PRECONDITION_FAILED otherwise). An empty Queue asks the
// broker to name it; the name comes back in QueueDeclareOk.
type QueueDeclare struct {
	Queue      string
	Passive    bool  // only check that it exists (404 NOT_FOUND otherwise)
	Durable    bool  // survives a broker restart
	Exclusive  bool  // used by this connection only, deleted when it closes
	AutoDelete bool  // deleted when its last consumer goes
	Args       Table // e.g. "x-message-ttl", "x-queue-type", "x-max-length"
}

// QueueDeclareOk is the result of QueueDeclare.
type QueueDeclareOk struct {
	Queue         string // the name, chosen by the broker if the request left it empty
	MessageCount  uint32 // messages ready
	ConsumerCount uint32 // active consumers
}

// QueueBind routes messages from Exchange to Queue.
type QueueBind struct {
	Queue      string
	Exchange   string
	RoutingKey string
	Args       Table // matching arguments for headers exchanges
}

// QueueBindOk is the result of QueueBind.
type QueueBindOk struct{}

// QueueUnbind removes a binding.
type QueueUnbind struct {
	Queue      string
	Exchange   string
	RoutingKey string
	Args       Table
}

// QueueUnbindOk is the result of QueueUnbind.
type QueueUnbindOk struct{}

// QueuePurge removes every ready message from a queue.
type QueuePurge struct {
	Queue string
}

// QueuePurgeOk is the result of QueuePurge.
type QueuePurgeOk struct {
	MessageCount uint32 // messages removed
}

// QueueDelete deletes a queue and its messages. Deleting one that does not
// exist succeeds.
type QueueDelete struct {
	Queue    string
	IfUnused bool // fail with 406 if it has consumers
	IfEmpty  bool // fail with 406 if it holds messages
}

// QueueDeleteOk is the result of QueueDelete.
type QueueDeleteOk struct {
	MessageCount uint32 // messages deleted with the queue
}
