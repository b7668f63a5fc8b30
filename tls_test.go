package leveret_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
)

// selfSigned makes a throw-away certificate for 127.0.0.1 that is its own CA.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leveret test server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestTLSClientCertificateRequired: a TLS 1.3 server that requires a client
// certificate refuses one that has none after the client's side of the
// handshake has completed; Dial reports the server's alert, not a reset.
func TestTLSClientCertificateRequired(t *testing.T) {
	leakCheck(t)
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { // owner: this test; exits when the listener closes.
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			nc.(*tls.Conn).Handshake() // fails: no client certificate; sends the alert
			if tc, ok := nc.(*tls.Conn).NetConn().(*net.TCPConn); ok {
				tc.SetLinger(0) // then a reset, as a broker's hard close can
			}
			nc.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	for i := range 20 {
		_, err := leveret.Dial(waitCtx(t), "amqps://guest:guest@"+ln.Addr().String()+"/",
			leveret.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}))
		require.Error(t, err, "dial %d", i)
		assert.Contains(t, err.Error(), "certificate required", "dial %d", i)
	}
}
