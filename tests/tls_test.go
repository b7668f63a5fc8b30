package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// The TLS node comes from scripts/broker.sh tls (make test starts it; the
// 4.x run's from scripts/chroot-broker.sh tls): an amqps listener on 5671
// (the 4.x one on $LEVERET_TLS_PORT) with verify_peer and fail_if_no_peer_cert, a
// server certificate for "localhost" only, and SASL EXTERNAL for the
// client certificate's CN (leveret-client).

const tlsClientCN = "leveret-client"

func tlsCertDir() string {
	if d := os.Getenv("LEVERET_TLS_CERTS"); d != "" {
		return d
	}
	return "/var/lib/rabbitmq/leveret-ltls/certs"
}

// tlsNodeName is the TLS node's Erlang name: ltls (scripts/broker.sh tls),
// or $LEVERET_TLS_NODE (a 4.x node from scripts/chroot-broker.sh tls).
func tlsNodeName(t *testing.T) string {
	if n := os.Getenv("LEVERET_TLS_NODE"); n != "" {
		return localNode(t, n)
	}
	return localNode(t, "ltls")
}

// tlsPort is the TLS node's amqps port: 5671, or $LEVERET_TLS_PORT.
func tlsPort() string {
	if p := os.Getenv("LEVERET_TLS_PORT"); p != "" {
		return p
	}
	return "5671"
}

// tlsConfig trusts the test CA and, with clientCert, presents the client
// certificate.
func tlsConfig(t *testing.T, clientCert bool) *tls.Config {
	t.Helper()
	dir := tlsCertDir()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err, "the TLS node's certificates (scripts/broker.sh tls)")
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	cfg := &tls.Config{RootCAs: roots}
	if clientCert {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
		require.NoError(t, err)
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func tlsDial(t *testing.T, url string, opts ...leveret.Option) (*leveret.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	c, err := leveret.Dial(ctx, url, append([]leveret.Option{leveret.WithReconnect(nil)}, opts...)...)
	require.Less(t, time.Since(start), 15*time.Second, "Dial did not end within its ctx")
	if c != nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

// roundTrip declares a queue, publishes a message and gets it back, then
// does the same with a 300 KiB body: Client.Publish queues large body
// frames by reference, which a TLS connection writes copied flat.
func roundTrip(t *testing.T, c *leveret.Client) {
	t.Helper()
	ctx := testContext(t)
	q := uniqueName(t, "tls")
	_, err := c.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true, AutoDelete: true}).Wait(ctx)
	require.NoError(t, err)
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i % 251)
	}
	for _, body := range [][]byte{[]byte("over tls"), big} {
		_, err = c.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}}).Wait(ctx)
		require.NoError(t, err)
		r, err := c.Get(ops.Get{Queue: q, NoAck: true}).Wait(ctx)
		require.NoError(t, err)
		require.False(t, r.Empty())
		require.True(t, bytes.Equal(body, r.Delivery.Body), "a %d-byte body came back different", len(body))
	}
	_, err = c.QueueDelete(ops.QueueDelete{Queue: q}).Wait(ctx)
	require.NoError(t, err)
}

// tlsConnUser is the user and mechanism the broker reports for the
// connection named name on the TLS node.
func tlsConnUser(t *testing.T, name string) (user, mechanism string) {
	t.Helper()
	c, ok := findConnectionOn(t, []string{"-n", tlsNodeName(t)}, name, "user", "auth_mechanism")
	require.True(t, ok, "connection %q not listed", name)
	return c.User, c.AuthMechanism
}

// amqps with the test CA and a client certificate connects (PLAIN as
// guest over TLS) and round-trips a message; without a port in the URL
// the default 5671 is used (checked when the TLS node under test listens
// there: the 3.10 run's; the 4.x node has a port of its own).
func TestTLSConnectsWithCAAndClientCert(t *testing.T) {
	urls := []string{"amqps://guest:guest@localhost:" + tlsPort() + "/"}
	if tlsPort() == "5671" {
		urls = append(urls, "amqps://guest:guest@localhost/")
	}
	for _, url := range urls {
		name := uniqueName(t, "tls-conn")
		c, err := tlsDial(t, url, leveret.WithTLS(tlsConfig(t, true)), leveret.WithConnectionName(name))
		require.NoError(t, err, url)
		roundTrip(t, c)
		user, mech := tlsConnUser(t, name)
		require.Equal(t, "guest", user)
		require.Equal(t, "PLAIN", mech)
		require.NoError(t, c.Close(testContext(t)))
	}
}

// SASL EXTERNAL logs in as the client certificate's CN.
func TestTLSExternalAuthAsCertificateCN(t *testing.T) {
	name := uniqueName(t, "tls-external")
	c, err := tlsDial(t, "amqps://localhost:"+tlsPort()+"/", leveret.WithTLS(tlsConfig(t, true)),
		leveret.WithExternalAuth(), leveret.WithConnectionName(name))
	require.NoError(t, err)
	roundTrip(t, c)
	user, mech := tlsConnUser(t, name)
	require.Equal(t, tlsClientCN, user)
	require.Equal(t, "EXTERNAL", mech)
}

// The system roots do not trust the test CA: a verification error, not a
// hang or a reset.
func TestTLSSystemRootsFailVerification(t *testing.T) {
	cfg := tlsConfig(t, true)
	cfg.RootCAs = nil
	_, err := tlsDial(t, "amqps://guest:guest@localhost:"+tlsPort()+"/", leveret.WithTLS(cfg))
	require.Error(t, err)
	var unknown x509.UnknownAuthorityError
	require.True(t, errors.As(err, &unknown), "want an unknown-authority error, got %v", err)
	t.Logf("system roots: %v", err)
}

// The server certificate names localhost only: dialing 127.0.0.1 checks
// the URL's host against it and fails.
func TestTLSHostNameChecked(t *testing.T) {
	_, err := tlsDial(t, "amqps://guest:guest@127.0.0.1:"+tlsPort()+"/", leveret.WithTLS(tlsConfig(t, true)))
	require.Error(t, err)
	var host x509.HostnameError
	require.True(t, errors.As(err, &host), "want a host-name error, got %v", err)
	t.Logf("host mismatch: %v", err)
}

// Without a client certificate the broker (fail_if_no_peer_cert) refuses
// the handshake, and the error carries its reason: TLS's "certificate
// required" alert, not a bare reset.
func TestTLSNoClientCertificateRefused(t *testing.T) {
	_, err := tlsDial(t, "amqps://guest:guest@localhost:"+tlsPort()+"/", leveret.WithTLS(tlsConfig(t, false)))
	require.Error(t, err)
	t.Logf("no client certificate: %v", err)
	require.Contains(t, err.Error(), "certificate required")
}
