package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSSettings names the PEM files of a TLS identity. In YAML configs the keys
// are ca, cert, key and server_name.
type TLSSettings struct {
	// CA is the PEM bundle of authorities that sign the peer's certificate.
	// Default: the system roots (client) / no client certificates (server).
	CA string `yaml:"ca"`
	// Cert and Key are this side's certificate chain and private key (PEM).
	// A device needs them for mTLS; the broker always needs them.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the broker's certificate.
	// Default: the host of the server URL.
	ServerName string `yaml:"server_name"`
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA %s: no PEM certificates", path)
	}
	return pool, nil
}

func (s *TLSSettings) pair() ([]tls.Certificate, error) {
	if s.Cert == "" && s.Key == "" {
		return nil, nil
	}
	if s.Cert == "" || s.Key == "" {
		return nil, errors.New("load client certificate: cert and key must both be set")
	}
	c, err := tls.LoadX509KeyPair(s.Cert, s.Key)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", s.Cert, err)
	}
	return []tls.Certificate{c}, nil
}

// Config returns a client tls.Config (TLS 1.2 or newer) that trusts CA and
// presents Cert/Key when set.
func (s *TLSSettings) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
	if s.CA != "" {
		pool, err := LoadPool(s.CA)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	certs, err := s.pair()
	if err != nil {
		return nil, err
	}
	c.Certificates = certs
	return c, nil
}

// ServerConfig returns a broker tls.Config presenting Cert/Key; when CA is set,
// clients must present a certificate signed by it (mTLS). The device id is
// then the certificate's subject common name (see ClientIdentity).
func (s *TLSSettings) ServerConfig() (*tls.Config, error) {
	certs, err := s.pair()
	if err != nil {
		return nil, err
	}
	if certs == nil {
		return nil, errors.New("load server certificate: cert and key are required")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: certs}
	if s.CA != "" {
		pool, err := LoadPool(s.CA)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// ClientIdentity returns the identity a verified client certificate proves:
// its subject common name, which must be a valid device id or the hub's.
func ClientIdentity(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("client identity: no client certificate")
	}
	cn := cs.PeerCertificates[0].Subject.CommonName
	if IsHub(cn) {
		return cn, nil
	}
	if err := ValidDevice(cn); err != nil {
		return "", fmt.Errorf("client identity: %w", err)
	}
	return cn, nil
}
