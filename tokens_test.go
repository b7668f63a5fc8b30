package leveret_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
)

// TestTokenSourceRefreshes: with WithTokenSource the dial uses the first
// token, and the client hands the broker a fresh one (update-secret)
// before each expires, on the same connection; a failing token source is
// tried again before the token expires, and Close ends the refresher
// (goleak).
func TestTokenSourceRefreshes(t *testing.T) {
	leakCheck(t)
	const lifetime = 400 * time.Millisecond
	secrets := make(chan string, 16)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		for {
			_, m, err := c.ReadMethod()
			switch m := m.(type) {
			case *proto.ConnectionUpdateSecret:
				secrets <- m.NewSecret
				c.Send(0, &proto.ConnectionUpdateSecretOk{})
				continue
			case *proto.ConnectionClose:
				c.Send(0, &proto.ConnectionCloseOk{})
			default:
				assert.NoError(t, err)
			}
			return
		}
	})
	var issued atomic.Int32
	source := func(ctx context.Context) (leveret.Token, error) {
		n := issued.Add(1)
		if n == 3 {
			return leveret.Token{}, errors.New("token endpoint unavailable") // tried again a second later
		}
		return leveret.Token{Username: "svc", Secret: fmt.Sprintf("token-%d", n), Expiry: time.Now().Add(lifetime)}, nil
	}
	var conns atomic.Int32
	c := dial(t, s, leveret.WithTokenSource(source), leveret.WithEventHandler(func(e leveret.Event) {
		if e.Kind == leveret.EventConnected {
			conns.Add(1)
		}
	}))
	assert.Contains(t, string(s.Conns()[0].Handshake().StartOk.Response), "token-1", "the dial sends the first token")
	assert.Equal(t, "token-2", receive(t, secrets, "the first refresh"))
	// The third token fails: tried again before token-2 expires.
	assert.Equal(t, "token-4", receive(t, secrets, "the refresh after a failed one"))
	assert.Equal(t, "token-5", receive(t, secrets, "the next refresh"))
	require.NoError(t, c.Close(waitCtx(t)))
	assert.Equal(t, int32(1), conns.Load(), "one connection")
}
