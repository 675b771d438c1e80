package transporttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority for mTLS tests. Files live in a
// test temporary directory.
type CA struct {
	Cert string // path of the CA certificate (PEM)
	dir  string
	crt  *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

// NewCA creates a CA named "autopatcher test CA".
func NewCA(t testing.TB) *CA {
	t.Helper()
	return NewNamedCA(t, "autopatcher test CA")
}

// NewNamedCA creates a CA whose subject common name is name, for tests that
// tell several CAs apart.
func NewNamedCA(t testing.TB, name string) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	ca := &CA{dir: t.TempDir(), n: 1}
	ca.Cert = filepath.Join(ca.dir, "ca.pem")
	ca.crt, ca.key = create(t, tmpl, nil, nil, ca.Cert, "")
	return ca
}

// Issue makes a certificate for cn (a device id, transport.Hub, or "127.0.0.1"
// for a server) and returns the paths of its certificate and key.
func (ca *CA) Issue(t testing.TB, cn string, server bool) (cert, key string) {
	t.Helper()
	tmpl := leafTemplate(cn, x509.ExtKeyUsageClientAuth)
	if server {
		tmpl = leafTemplate(cn, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	return ca.sign(t, tmpl)
}

// IssueDual makes a certificate for cn valid for both client and server
// authentication on 127.0.0.1 and returns the paths of its certificate and key.
func (ca *CA) IssueDual(t testing.TB, cn string) (cert, key string) {
	t.Helper()
	tmpl := leafTemplate(cn, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
	tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	return ca.sign(t, tmpl)
}

// SelfSigned makes a self-signed certificate for cn, valid for client and
// server authentication on 127.0.0.1, and returns the paths of its certificate
// and key. Every call makes a new key.
func SelfSigned(t testing.TB, cn string) (cert, key string) {
	t.Helper()
	tmpl := leafTemplate(cn, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
	tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	create(t, tmpl, nil, nil, cert, key)
	return cert, key
}

func leafTemplate(cn string, usage ...x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
}

// sign issues tmpl under ca with the next serial number. The files are named
// after the common name and the serial, so the same name can be issued twice.
func (ca *CA) sign(t testing.TB, tmpl *x509.Certificate) (cert, key string) {
	t.Helper()
	ca.n++
	tmpl.SerialNumber = big.NewInt(ca.n)
	base := filepath.Join(ca.dir, fmt.Sprintf("%s-%d", tmpl.Subject.CommonName, ca.n))
	cert, key = base+".pem", base+".key"
	create(t, tmpl, ca.crt, ca.key, cert, key)
	return cert, key
}

// create makes a new P-256 key and a certificate from tmpl signed by
// parentKey (self-signed when parent is nil), writes the certificate to
// certPath and, unless keyPath is empty, the key to keyPath.
func create(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certPath, "CERTIFICATE", der)
	if keyPath != "" {
		kb, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, keyPath, "EC PRIVATE KEY", kb)
	}
	return crt, k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
