// Package leveret is an AMQP 0-9-1 client for RabbitMQ built around
// promises with explicit wait points.
//
// # The model
//
// Dial returns a *Client: a connection the client replaces by itself when
// it drops (reconnecting and recovering what it declared and consumed;
// see WithReconnect). Every operation on it (declare,
// bind, publish, get, consume, ack, qos, confirm, tx) returns a *Promise[T]
// at once, without waiting for the broker; the connection's reader
// goroutine settles the promise when the reply arrives, and the caller
// decides when to wait:
//
//	declared := c.QueueDeclare(ops.QueueDeclare{Queue: "jobs", Durable: true})
//	bound := c.QueueBind(ops.QueueBind{Queue: "jobs", Exchange: "amq.direct", RoutingKey: "jobs"})
//	if err := leveret.WaitAll(ctx, declared, bound); err != nil { ... }
//
// The wait points are Promise.Wait (one result, bounded by a context),
// WaitAll and WaitAny (promises of any result types), Collect (a slice of
// one type), and Promise.Done or Err for select loops and polling. Giving up
// a wait stops the wait, not the operation: the broker may still carry it
// out. Errors are typed: a *ChannelError or *ConnectionError carries the
// broker's reply code and the method that failed, and errors.Is matches
// reply-code sentinels such as ErrNotFound or ErrPreconditionFailed,
// however the error is wrapped. An error is raised at the first wait point
// that can see it.
//
// Operations issued through one channel go out in issue order and pipeline:
// a thousand declarations cost one wait, not a thousand round trips.
//
// # Two levels: Client and Channel
//
// Operations called on the Client are the safe level. They run on the
// client's own channels and one failing operation affects no other: the
// broker discards what was sent behind a failing operation on its channel,
// so leveret re-sends those on a fresh channel, and only the failing one
// fails. Deliveries from Client.Get and Client.Consume live on channels that
// no unrelated operation can close, so their acks work.
//
// A Channel (Client.Channel) is an explicit AMQP channel with the
// protocol's classic semantics: its operations share its fate. When the
// broker closes it, the failing operation gets the *ChannelError and every
// operation issued behind it fails with ErrNotExecuted wrapping it. Use one
// for per-channel state (qos, transactions, exclusive consumers) and for
// read-your-writes ordering across exchanges.
//
// # Which publish to use
//
//   - Client.Publish is the one safe way to publish at the client level: its
//     promise settles when the broker has confirmed the message (the
//     client's channels run in confirm mode), fails with ErrNacked,
//     *ReturnedError (mandatory and unroutable) or the publish's own
//     *ChannelError, and is never reported done when the broker discarded
//     it. Use it unless one of the next two fits better.
//   - confirm.Publisher is for a high-rate confirmed stream on a channel of
//     its own: a bounded in-flight window, typed outcomes (acked, nacked,
//     returned) and Flush. It shares its channel's fate like any Channel.
//   - Channel.Publish and Channel.Send are fire and forget: the promise (or
//     Send's error) says the frames were written, not that the broker took
//     the message. A broker-side failure closes the channel and surfaces at
//     its next wait point.
//
// # Consuming
//
// Consume returns a *Consumer whose Deliveries channel is read with for
// range. With a prefetch limit and manual acks the broker never sends more
// than the buffer holds; otherwise (NoAck, no prefetch) what does not fit
// waits in memory for the reader, so nothing is dropped (see
// WithConsumerOverflowLimit to bound it instead). Acks are checked locally:
// a double ack or an ack of a delivery from a closed channel is refused with
// an error rather than sent. Consumer.Shutdown stops a consumer gracefully:
// no new deliveries, every one received can still be acked, then its
// channel closes.
//
// # Dial URLs
//
// Dial takes amqp://user:password@host:port/vhost or amqps://... (ports
// 5672 and 5671 by default; IPv6 literals in brackets; the vhost and the
// credentials percent-encoded, so vhost "/" is %2f, and an empty or bare
// "/" path also means "/"). The query may set, each at most once:
// heartbeat (seconds; 0 disables), channel_max, frame_max (bytes, at least
// 4096) and connection_timeout (milliseconds), for example
// amqp://localhost/%2f?heartbeat=5&connection_timeout=2000. Options given to
// Dial override the query. Errors never contain the password. With
// WithFailover, Dial takes several URLs (and url "") and tries them in
// order; when all fail it waits the reconnect policy's delay and tries
// again until its ctx ends (WithReconnect). A connection that drops later
// is recovered by itself: the client reconnects under the same policy,
// re-declares the topology the broker confirmed to it, restarts its
// Client.Consume consumers and re-sends client-level operations and
// unconfirmed Client.Publish messages (see Client and WithEventHandler).
// Explicit channels are re-opened with their set-up (see Channel).
//
// # A pitfall: defer and promises
//
// Go evaluates a deferred call's receiver and arguments at the defer
// statement, so
//
//	defer c.QueueDelete(ops.QueueDelete{Queue: q}).Wait(ctx)
//
// issues the delete at once, when the defer runs, not at return: only the
// Wait is deferred. Write defer func() { c.QueueDelete(...).Wait(ctx) }().
//
// # Goroutines
//
// A connection runs a reader and a writer (which also sends heartbeats);
// the client runs a supervisor that reconnects (and, with
// WithTokenSource, a token refresher), plus, while there is work
// for them, a dispatcher for handlers, hooks and events, one pump per
// consumer whose deliveries overflow its buffer, and a timer callback per
// consumer waiting for its queue after a reconnect. No goroutine per
// operation, promise or message; user code never runs on the reader. A
// failed Dial leaves none behind and Client.Close joins them all.
package leveret
