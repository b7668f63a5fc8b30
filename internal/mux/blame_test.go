package mux

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/internal/proto"
)

// TestBlameCandidates: a close naming exchange.declare blames the one
// pending exchange.declare it can mean, the ones its text quotes, or,
// when it quotes none, every one as a suspect; other requests are not
// blamed.
func TestBlameCandidates(t *testing.T) {
	pending := func() ([]*Channel, []*Request) {
		reqs := []*Request{
			{Method: &proto.ExchangeDeclare{Exchange: "a", Type: "direct"}},
			{Method: &proto.ExchangeDeclare{Exchange: "delayed", Type: "x-delayed-message"}},
			{Method: &proto.QueueDeclare{Queue: "q"}},
			{Method: &proto.ExchangeDeclare{Exchange: "b", Type: "topic"}},
		}
		return []*Channel{{pending: reqs[:2]}, {pending: append([]*Request{nil}, reqs[2:]...)}}, reqs
	}
	blames := func(reqs []*Request) []Blame {
		var b []Blame
		for _, r := range reqs {
			b = append(b, r.Blame)
		}
		return b
	}
	chans, reqs := pending()
	blameCandidates(chans, proto.ExchangeDeclareID, "COMMAND_INVALID - unknown exchange type 'x-delayed-message'")
	require.Equal(t, []Blame{NotBlamed, Culprit, NotBlamed, NotBlamed}, blames(reqs))

	chans, reqs = pending()
	blameCandidates(chans, proto.ExchangeDeclareID, "COMMAND_INVALID - refused")
	require.Equal(t, []Blame{Suspect, Suspect, NotBlamed, Suspect}, blames(reqs))

	chans, reqs = pending()
	blameCandidates(chans, proto.QueueDeclareID, "INTERNAL_ERROR")
	require.Equal(t, []Blame{NotBlamed, NotBlamed, Culprit, NotBlamed}, blames(reqs))

	chans, reqs = pending()
	blameCandidates(chans, 0, "CONNECTION_FORCED - closed via management plugin")
	require.Equal(t, []Blame{NotBlamed, NotBlamed, NotBlamed, NotBlamed}, blames(reqs))
}
