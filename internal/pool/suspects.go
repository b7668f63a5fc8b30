package pool

import "github.com/leveret-mq/leveret/internal/session"

// When the broker closes the connection over one operation (RabbitMQ does
// for an unknown exchange type, 503; a queue its configuration forbids,
// 541; a qos it does not implement, 540), it names the operation's method,
// and mux marks the requests that were awaiting a reply for it
// (mux.Blame). A pooled operation the close can only mean fails with the
// *ConnectionError at once: re-sent on the next connection, as lost
// operations are, it would close that one too, for ever. When several
// could be meant, each is a suspect: suspects are re-sent one at a time,
// after the other parked operations, and a suspect that the next close
// means too is the culprit and fails. Each culprit thus costs at most one
// more connection, and the innocent suspects succeed.

// suspect queues op, a suspect of g's close, to be re-sent alone once a
// connection is ready.
func (p *Pool) suspect(op *operation, g *session.Generation, err error) {
	p.mu.Lock()
	p.suspects = append(p.suspects, op)
	start := !p.isolating
	p.isolating = true
	p.mu.Unlock()
	if start {
		p.retryLater(g, err, p.nextSuspect, p.failSuspects)
	}
}

// nextSuspect sends the next suspect, alone: the previous one has
// finished. Sent while the client is offline, it parks and keeps its turn.
func (p *Pool) nextSuspect() {
	p.mu.Lock()
	if len(p.suspects) == 0 {
		p.isolating = false
		p.mu.Unlock()
		return
	}
	op := p.suspects[0]
	p.suspects[0] = nil
	p.suspects = p.suspects[1:]
	p.mu.Unlock()
	op.isolated = true
	p.send(op)
}

// failSuspects fails the suspects still queued when the client ends, or
// does not reconnect.
func (p *Pool) failSuspects(err error) {
	p.mu.Lock()
	ops := p.suspects
	p.suspects, p.isolating = nil, false
	p.mu.Unlock()
	for _, op := range ops {
		p.finish(op, nil, nil, err)
	}
}
