package mux

import (
	"strings"

	"github.com/leveret-mq/leveret/internal/proto"
)

// Blame says what a connection.close from the broker says of a request
// that was awaiting its reply when it arrived. RabbitMQ closes the whole
// connection for some refusals (an unknown exchange type, 503; a queue
// type its configuration forbids, 541; a qos it does not implement, 540)
// and names the method that caused it. An owner that re-sends what a lost
// connection discarded must not re-send the culprit, or every new
// connection is closed the same way.
type Blame uint8

const (
	// NotBlamed: the close named another method, or none (an I/O error,
	// a forced close): the request was lost with the connection.
	NotBlamed Blame = iota
	// Culprit: the one request the close can mean. It failed; sent again,
	// it would close the next connection too.
	Culprit
	// Suspect: one of several requests the close can mean. Sent again one
	// at a time, the culprit is the one in flight when it happens again.
	Suspect
)

// blameCandidates records on the pending requests of the broker's close that
// named method what it says of each (Request.Blame): the requests for that
// method are the candidates; those whose entity names (or exchange type)
// the close's text quotes, as RabbitMQ does ("unknown exchange type
// 'x-delayed-message'", "queue 'q' in vhost '/'"), are more likely; one
// alone is the culprit, several are suspects. It runs on the reader,
// before any channel is failed, with every channel's lock taken in turn.
func blameCandidates(chans []*Channel, method proto.MethodID, text string) {
	if method == 0 {
		return
	}
	var candidates, quoted []*Request
	for _, ch := range chans {
		ch.mu.Lock()
		for _, r := range ch.pending {
			if r != nil && r.Method.ID() == method {
				candidates = append(candidates, r)
				if quotes(text, r.Method) {
					quoted = append(quoted, r)
				}
			}
		}
		ch.mu.Unlock()
	}
	if len(quoted) > 0 {
		candidates = quoted
	}
	for _, r := range candidates {
		r.Blame = Suspect
		if len(candidates) == 1 {
			r.Blame = Culprit
		}
	}
}

// quotes reports whether text quotes one of the names m acts on, or the
// exchange type it declares, as RabbitMQ quotes them: 'name'.
func quotes(text string, m proto.Method) bool {
	var names []string
	switch m := m.(type) {
	case *proto.ExchangeDeclare:
		names = []string{m.Exchange, m.Type}
	case *proto.ExchangeDelete:
		names = []string{m.Exchange}
	case *proto.ExchangeBind:
		names = []string{m.Destination, m.Source}
	case *proto.ExchangeUnbind:
		names = []string{m.Destination, m.Source}
	case *proto.QueueDeclare:
		names = []string{m.Queue}
	case *proto.QueueBind:
		names = []string{m.Queue, m.Exchange}
	case *proto.QueueUnbind:
		names = []string{m.Queue, m.Exchange}
	case *proto.QueuePurge:
		names = []string{m.Queue}
	case *proto.QueueDelete:
		names = []string{m.Queue}
	case *proto.BasicConsume:
		names = []string{m.Queue}
	case *proto.BasicGet:
		names = []string{m.Queue}
	}
	for _, n := range names {
		if n != "" && strings.Contains(text, "'"+n+"'") {
			return true
		}
	}
	return false
}
