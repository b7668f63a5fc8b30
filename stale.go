package leveret

// Deliveries still buffered for the application when their connection
// drops are stale: the broker has requeued them and will deliver them
// again on the next connection, and their acks would be refused
// (ErrStaleDelivery). Handed over, each would be processed twice (300
// messages with prefetch 50 and one forced close: 350 handled). So they
// are dropped at the drop, before the application receives them; at most
// the deliveries it already holds (and one a pump is handing over) are
// processed twice. Kept: a no-ack consumer's (the broker will not deliver
// them again), a stream consumer's (it resumes after the offset already
// handed over), and a consumer's with a DeliveryHook (its hooks saw them,
// and the OnSettle of a stale ack ends what they began).

// dropStale drops the deliveries waiting for cs's application, on the
// reader of the connection that dropped.
func (cs *Consumer) dropStale() {
	if cs.noAck || cs.hooked || cs.streamNext.Load() != 0 {
		return
	}
	cs.ovMu.Lock()
	clear(cs.overflow)
	cs.overflow, cs.ovBytes = nil, 0
	cs.wakeReaderLocked()
	cs.ovMu.Unlock()
	for {
		select {
		case _, ok := <-cs.deliveries: // stale: the broker delivers it again
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// dropStaleDeliveries drops what waits for the application of every
// consumer on ch, whose link was lost with its connection.
func (ch *Channel) dropStaleDeliveries() {
	ch.mu.Lock()
	consumers := make([]*Consumer, 0, len(ch.consumers))
	for _, cs := range ch.consumers {
		consumers = append(consumers, cs)
	}
	ch.mu.Unlock()
	for _, cs := range consumers {
		cs.dropStale()
	}
}
