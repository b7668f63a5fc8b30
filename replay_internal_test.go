package leveret

import (
	"errors"
	"fmt"
	"testing"

	"github.com/leveret-mq/leveret/internal/topology"
)

// The replay reads this package's errors through classifyReplay: a lost
// connection, an item discarded behind a failure, a queue locked by the
// lost connection, and any other refusal.
func TestClassifyReplay(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want topology.Outcome
	}{
		{&ConnectionError{Code: 320, Text: "CONNECTION_FORCED"}, topology.Lost},
		{fmt.Errorf("amqp: channel 3 closed by this client: %w", ErrClosed), topology.Lost},
		{fmt.Errorf("%w: %w", ErrNotExecuted, &ChannelError{Code: 406}), topology.Discarded},
		{&ChannelError{Code: 405, Text: "RESOURCE_LOCKED"}, topology.Locked},
		{&ChannelError{Code: 406, Text: "PRECONDITION_FAILED"}, topology.Refused},
		{errors.New("anything else"), topology.Refused},
	} {
		if got := classifyReplay(tc.err); got != tc.want {
			t.Errorf("classifyReplay(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
