package leveret_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// handshakeOf dials s with opts and returns the connection.start-ok the
// server received.
func handshakeOf(t *testing.T, s *fakeserver.Server, conns <-chan *fakeserver.Conn, opts ...leveret.Option) *proto.ConnectionStartOk {
	t.Helper()
	c := dial(t, s, opts...)
	sc := receive(t, conns, "server connection")
	require.NoError(t, closeClient(t, c))
	return sc.Handshake().StartOk
}

func serverConns(t *testing.T, opts fakeserver.Options) (*fakeserver.Server, chan *fakeserver.Conn) {
	conns := make(chan *fakeserver.Conn, 4)
	s := fakeserver.StartWith(t, opts, func(c *fakeserver.Conn) {
		conns <- c
		c.Serve()
	})
	return s, conns
}

// TestConnectionOptions: a custom dialer, extra client properties (which
// cannot replace leveret's capabilities) and the locale reach the broker.
func TestConnectionOptions(t *testing.T) {
	leakCheck(t)
	s, conns := serverConns(t, fakeserver.Options{})
	var dialed []string
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, network+" "+addr)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	ok := handshakeOf(t, s, conns, leveret.WithDialer(dialer), leveret.WithLocale("de_DE"),
		leveret.WithClientProperties(ops.Table{"service": "billing", "product": "billing-svc", "capabilities": "none"}))
	require.Len(t, dialed, 1)
	assert.Contains(t, dialed[0], "tcp 127.0.0.1:")
	assert.Equal(t, "de_DE", ok.Locale)
	assert.Equal(t, "billing", ok.ClientProperties["service"])
	assert.Equal(t, "billing-svc", ok.ClientProperties["product"])
	caps, isTable := ok.ClientProperties["capabilities"].(ops.Table)
	require.True(t, isTable, "leveret's capabilities stay")
	assert.Equal(t, true, caps["publisher_confirms"])
}

// TestMechanismChoice: the strongest mechanism both sides allow is used;
// AMQPLAIN carries the credentials as a table; no common mechanism fails
// at once, naming both lists.
func TestMechanismChoice(t *testing.T) {
	leakCheck(t)
	t.Run("PLAIN preferred", func(t *testing.T) {
		s, conns := serverConns(t, fakeserver.Options{Mechanisms: "AMQPLAIN PLAIN"})
		ok := handshakeOf(t, s, conns)
		assert.Equal(t, "PLAIN", ok.Mechanism)
		assert.Equal(t, "\x00guest\x00guest", ok.Response)
	})
	t.Run("AMQPLAIN when allowed alone", func(t *testing.T) {
		s, conns := serverConns(t, fakeserver.Options{Mechanisms: "PLAIN AMQPLAIN"})
		ok := handshakeOf(t, s, conns, leveret.WithMechanisms("amqplain"))
		assert.Equal(t, "AMQPLAIN", ok.Mechanism)
		// A field table without its length: LOGIN and PASSWORD as long strings.
		want, err := proto.AppendTable(nil, ops.Table{"LOGIN": "guest", "PASSWORD": "guest"})
		require.NoError(t, err)
		assert.Equal(t, string(want[4:]), ok.Response)
		decoded, _, err := proto.DecodeTable(append(want[:4:4], ok.Response...))
		require.NoError(t, err)
		assert.Equal(t, ops.Table{"LOGIN": "guest", "PASSWORD": "guest"}, decoded)
	})
	t.Run("no common mechanism", func(t *testing.T) {
		s := fakeserver.StartWith(t, fakeserver.Options{Mechanisms: "PLAIN"}, func(c *fakeserver.Conn) {})
		_, err := leveret.Dial(waitCtx(t), s.URL(), leveret.WithMechanisms("AMQPLAIN"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "the client allows AMQPLAIN, the broker offers PLAIN")
		assert.NotContains(t, err.Error(), "guest@", "no credentials in the error")
	})
	t.Run("unknown or EXTERNAL without TLS", func(t *testing.T) {
		_, err := leveret.Dial(waitCtx(t), "amqp://localhost/", leveret.WithMechanisms("CRAM-MD5"))
		assert.ErrorContains(t, err, `"CRAM-MD5" is not supported`)
		_, err = leveret.Dial(waitCtx(t), "amqp://localhost/", leveret.WithMechanisms("EXTERNAL"))
		assert.ErrorContains(t, err, "EXTERNAL authentication needs TLS")
	})
}

// TestBlockedHandler: connection.blocked and unblocked reach the handler,
// with the reason, on the dispatcher, in order; Blocked follows them.
func TestBlockedHandler(t *testing.T) {
	leakCheck(t)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		c.Send(0, &proto.ConnectionBlocked{Reason: "low on memory"})
		c.Send(0, &proto.ConnectionUnblocked{})
		c.Serve()
	})
	type event struct {
		blocked bool
		reason  string
	}
	events := make(chan event, 2)
	c := dial(t, s, leveret.WithBlockedHandler(func(b bool, r string) { events <- event{b, r} }))
	assert.Equal(t, event{true, "low on memory"}, receive(t, events, "blocked"))
	assert.Equal(t, event{false, ""}, receive(t, events, "unblocked"))
	assert.False(t, c.Blocked())
}

// TestUpdateSecret: connection.update-secret carries the secret and the
// reason and completes on update-secret-ok; one pending when the connection
// ends fails with the connection's error.
func TestUpdateSecret(t *testing.T) {
	leakCheck(t)
	got := make(chan *proto.ConnectionUpdateSecret, 2)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		_, m := c.Expect(t, proto.ConnectionUpdateSecretID)
		got <- m.(*proto.ConnectionUpdateSecret)
		c.Send(0, &proto.ConnectionUpdateSecretOk{})
		_, m = c.Expect(t, proto.ConnectionUpdateSecretID)
		got <- m.(*proto.ConnectionUpdateSecret)
		c.Close() // the broker goes away instead of answering
	})
	client := dial(t, s)
	require.NoError(t, client.UpdateSecret(waitCtx(t), "token-1", "refresh"))
	m := receive(t, got, "update-secret")
	assert.Equal(t, "token-1", m.NewSecret)
	assert.Equal(t, "refresh", m.Reason)
	err := client.UpdateSecret(waitCtx(t), "token-2", "refresh")
	var ce *leveret.ConnectionError
	require.ErrorAs(t, err, &ce)
	assert.NotContains(t, err.Error(), "token-2")
	receive(t, got, "second update-secret")
}

// TestCredentialsProvider: every connection attempt asks the provider
// afresh; what it returns is what the broker sees, and its error fails the
// attempt without leaking anything.
func TestCredentialsProvider(t *testing.T) {
	leakCheck(t)
	s, conns := serverConns(t, fakeserver.Options{})
	calls := 0
	provider := func(context.Context) (string, string, error) {
		calls++
		return "svc", fmt.Sprintf("token-%d", calls), nil
	}
	for i := 1; i <= 2; i++ {
		ok := handshakeOf(t, s, conns, leveret.WithCredentials(provider))
		assert.Equal(t, fmt.Sprintf("\x00svc\x00token-%d", i), ok.Response, "dial %d", i)
	}
	assert.Equal(t, 2, calls)
	failing := func(context.Context) (string, string, error) { return "", "", errors.New("token service down") }
	_, err := leveret.Dial(waitCtx(t), s.URL(), leveret.WithCredentials(failing), leveret.WithReconnect(nil))
	require.ErrorContains(t, err, "token service down")
}
