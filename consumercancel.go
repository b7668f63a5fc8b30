package leveret

import (
	"github.com/leveret-mq/leveret/internal/pool"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// RabbitMQ cancels a consumer (basic.cancel) when its queue is deleted,
// and, from 4.3 on a quorum queue with a consumer timeout
// (x-consumer-timeout, consumer-timeout policy), when it held a delivery
// longer than that. Only the first means the consumer is over. So a
// Client.Consume consumer that the broker cancels asks, with a passive
// declare, whether its queue is still there: if it is not, the consumer
// ends with ErrConsumerCancelled; if it is, the consumer runs again on a
// fresh channel, as when the broker closes its channel over a timeout
// (RabbitMQ 3.x and 4.x on classic queues: 406 PRECONDITION_FAILED). Its
// old channel is closed, so what it held goes back to the queue and is
// redelivered; acks of those deliveries fail with ErrStaleDelivery. The
// restart is reported in an EventConsumerRefused.

// brokerCancelled handles the broker's basic.cancel of cs, a
// Client.Consume consumer that ran, on its channel ch. It runs on the
// reader and never blocks.
func (r *registry) brokerCancelled(cs *Consumer, ch *Channel) {
	q := cs.queue()
	r.c.pool.Issue([2]string{pool.Key('q', q)}, &proto.QueueDeclare{Queue: q, Passive: true},
		func(_ proto.Method, _ *ops.Message, err error) {
			if err != nil {
				cs.end(ErrConsumerCancelled) // the queue is gone (404), or the client ended
				return
			}
			r.restartCancelled(cs, ch)
		})
}

// restartCancelled moves cs, cancelled by the broker on ch although its
// queue is there, to a fresh channel, unless it ended or moved meanwhile.
func (r *registry) restartCancelled(cs *Consumer, ch *Channel) {
	ch.mu.Lock()
	if ch.consumers[cs.tag] != cs || cs.channel() != ch {
		ch.mu.Unlock()
		return
	}
	delete(ch.consumers, cs.tag)
	ch.stale = true // its deliveries go back to the queue with the channel
	ch.mu.Unlock()
	ch.mux().Close(func(error) {})
	r.retryConsumer(cs, ErrConsumerCancelled)
}
