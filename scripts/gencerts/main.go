// Command gencerts writes a throw-away certificate authority and a server
// and a client certificate signed by it, for the TLS broker of
// scripts/broker.sh tls (Go instead of openssl, which a bare machine may
// lack). The server certificate names only "localhost", so a client that
// dials 127.0.0.1 sees a host-name mismatch; the client certificate's CN
// is the user SASL EXTERNAL logs in as. The CA's CN differs from both
// leaf CNs, as RabbitMQ requires.
//
//	go run ./scripts/gencerts -out DIR [-client-cn NAME]
//
// It writes ca.pem, server.pem, server-key.pem, client.pem and
// client-key.pem (keys unencrypted, mode 0644: test material only).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

func main() {
	out := flag.String("out", "", "directory to write the PEM files to (created)")
	clientCN := flag.String("client-cn", "leveret-client", "common name of the client certificate")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "gencerts: -out DIR is required")
		os.Exit(2)
	}
	if err := run(*out, *clientCN); err != nil {
		fmt.Fprintln(os.Stderr, "gencerts:", err)
		os.Exit(1)
	}
}

type keyPair struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func run(dir, clientCN string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour) // tolerate a little clock skew
	ca, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "leveret test CA"},
		NotBefore:             now,
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil)
	if err != nil {
		return err
	}
	server, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		NotBefore:   now,
		NotAfter:    now.AddDate(10, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca)
	if err != nil {
		return err
	}
	client, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: clientCN},
		NotBefore:   now,
		NotAfter:    now.AddDate(10, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca)
	if err != nil {
		return err
	}
	for name, kp := range map[string]*keyPair{"ca": ca, "server": server, "client": client} {
		if err := writePEM(filepath.Join(dir, name+".pem"), "CERTIFICATE", kp.der); err != nil {
			return err
		}
		if name == "ca" {
			continue // the CA's key is not needed once the leaves are signed
		}
		der, err := x509.MarshalPKCS8PrivateKey(kp.key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+"-key.pem"), "PRIVATE KEY", der); err != nil {
			return err
		}
	}
	return nil
}

// issue makes a key and a certificate from tmpl, signed by parent (self-
// signed when parent is nil).
func issue(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, der: der, key: key}, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644)
}
