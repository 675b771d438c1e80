package hubtest

import (
	"testing"

	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// Cert is a certificate written as PEM files: a CA (KeyFile empty; it signs
// through Leaf) or a leaf certificate with its key.
type Cert struct {
	CertFile, KeyFile string
	ca                *transporttest.CA
}

// CA creates a self-signed certificate authority named name.
func CA(t testing.TB, name string) *Cert {
	t.Helper()
	ca := transporttest.NewNamedCA(t, name)
	return &Cert{CertFile: ca.Cert, ca: ca}
}

// Leaf issues a certificate for common name cn signed by ca (self-signed when ca is
// nil), valid for client and server authentication on 127.0.0.1.
func Leaf(t testing.TB, cn string, ca *Cert) *Cert {
	t.Helper()
	if ca == nil {
		cert, key := transporttest.SelfSigned(t, cn)
		return &Cert{CertFile: cert, KeyFile: key}
	}
	if ca.ca == nil {
		t.Fatalf("hubtest.Leaf %s: signer is not a CA made by hubtest.CA", cn)
	}
	cert, key := ca.ca.IssueDual(t, cn)
	return &Cert{CertFile: cert, KeyFile: key}
}
