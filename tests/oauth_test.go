package tests

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// The OAuth 2 tests run against the RabbitMQ 4.x node that takes OAuth 2
// tokens (scripts/chroot-broker.sh oauth, make broker4): JWTs signed here
// with the test key.

func oauthURL() string {
	if u := os.Getenv("LEVERET_OAUTH_URL"); u != "" {
		return u
	}
	return "amqp://127.0.0.1:5696/%2f"
}

// tokenSigner signs access tokens for the OAuth 2 node.
type tokenSigner struct{ key *rsa.PrivateKey }

func newTokenSigner(t *testing.T) *tokenSigner {
	path := os.Getenv("LEVERET_OAUTH_KEY")
	if path == "" {
		path = "/var/lib/leveret/oauth/signing.key"
	}
	raw, err := os.ReadFile(path)
	require.NoError(t, err, "the OAuth 2 node's signing key (make broker4 makes it)")
	block, _ := pem.Decode(raw)
	require.NotNil(t, block, "a PEM key in %s", path)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	rk, ok := key.(*rsa.PrivateKey)
	require.True(t, ok, "an RSA key")
	return &tokenSigner{key: rk}
}

// token returns a JWT for audience "rabbitmq" with full rights on every
// virtual host, expiring after lifetime.
func (s *tokenSigner) token(lifetime time.Duration) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(lifetime)
	header := map[string]string{"alg": "RS256", "typ": "JWT", "kid": "leveret"}
	claims := map[string]any{"sub": "leveret-test", "aud": []string{"rabbitmq"}, "iat": now.Unix(),
		"exp": exp.Unix(), "scope": []string{"rabbitmq.configure:*/*", "rabbitmq.write:*/*", "rabbitmq.read:*/*"}}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", time.Time{}, err
	}
	// exp has a resolution of a second: report the expiry the broker sees.
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), time.Unix(exp.Unix(), 0), nil
}

// TestOAuthTokenRefresh: a client with WithTokenSource and tokens that live
// 4 s keeps one connection for 5 token lifetimes: it hands the broker each
// next token (connection.update-secret) before the current one expires,
// and a queue it consumes from keeps delivering.
func TestOAuthTokenRefresh(t *testing.T) {
	const lifetime = 4 * time.Second
	signer := newTokenSigner(t)
	var issued atomic.Int32
	var disconnects atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 5*lifetime+30*time.Second)
	defer cancel()
	c, err := leveret.Dial(ctx, oauthURL(), leveret.WithTokenSource(func(context.Context) (leveret.Token, error) {
		issued.Add(1)
		tok, exp, err := signer.token(lifetime)
		return leveret.Token{Username: "ignored", Secret: tok, Expiry: exp}, err
	}), leveret.WithEventHandler(func(e leveret.Event) {
		if e.Kind == leveret.EventDisconnected {
			disconnects.Add(1)
			t.Logf("disconnected: %v", e.Err)
		}
	}))
	require.NoError(t, err, "dial %s with a token", oauthURL())
	defer c.Close(context.Background())
	queue := uniqueName(t, "q")
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: queue, Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
	cs, err := c.Consume(ops.Consume{Queue: queue, NoAck: true}).Wait(ctx)
	require.NoError(t, err)

	end := time.Now().Add(5 * lifetime)
	for n := 0; time.Now().Before(end); n++ {
		body := fmt.Sprint(n)
		_, err := c.Publish(ctx, ops.Publish{RoutingKey: queue, Message: ops.Message{Body: []byte(body)}}).Wait(ctx)
		require.NoError(t, err, "publish %d", n)
		select {
		case d := <-cs.Deliveries():
			require.Equal(t, body, string(d.Body))
		case <-ctx.Done():
			t.Fatalf("delivery %d never came", n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	require.Zero(t, disconnects.Load(), "the connection outlived 5 token lifetimes")
	require.GreaterOrEqual(t, issued.Load(), int32(6), "a token at the dial and one per refresh")
	require.NoError(t, cs.Err())
}

// TestOAuthTokenExpires: without refresh (WithCredentials), the broker
// closes the connection when its token expires; the client reports why
// (EventDisconnected) and reconnects with a fresh token.
func TestOAuthTokenExpires(t *testing.T) {
	const lifetime = 3 * time.Second
	signer := newTokenSigner(t)
	down := make(chan error, 4)
	recovered := make(chan struct{}, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := leveret.Dial(ctx, oauthURL(), leveret.WithCredentials(func(context.Context) (string, string, error) {
		tok, _, err := signer.token(lifetime)
		return "ignored", tok, err
	}), leveret.WithEventHandler(func(e leveret.Event) {
		switch e.Kind {
		case leveret.EventDisconnected:
			down <- e.Err
		case leveret.EventRecovered:
			recovered <- struct{}{}
		}
	}))
	require.NoError(t, err)
	defer c.Close(context.Background())
	start := time.Now()
	select {
	case err := <-down:
		t.Logf("closed %v after the dial: %v", time.Since(start).Round(time.Millisecond), err)
		var ce *leveret.ConnectionError
		require.ErrorAs(t, err, &ce)
		require.Contains(t, ce.Text, "expired")
	case <-ctx.Done():
		t.Fatal("the broker never closed the connection of an expired token")
	}
	select {
	case <-recovered:
	case <-ctx.Done():
		t.Fatal("no reconnect with a fresh token")
	}
	_, err = c.QueueDeclare(ops.QueueDeclare{Queue: uniqueName(t, "q"), Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
}
