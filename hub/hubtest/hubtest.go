// Package hubtest provides test helpers for the hub: signing keys and signed test
// bundles, a complete hub started in process on loopback, and raw MQTT clients.
package hubtest

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/hub"
)

// API tokens of the hub started by Start, one per role.
const (
	AdminToken    = "admin-token-0123456789"
	OperatorToken = "operator-token-0123456789"
	ViewerToken   = "viewer-token-0123456789"
)

// Key generates an Ed25519 signing key and writes its public half as PEM into a
// temporary file, whose path is returned for hub.Config.VendorKeys.
func Key(t testing.TB) (crypto.Signer, bundle.PublicKey, string) {
	t.Helper()
	k, err := bundle.GenerateKey(bundle.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemb, err := bundle.MarshalPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vendor.pub")
	if err := os.WriteFile(path, pemb, 0o644); err != nil {
		t.Fatal(err)
	}
	return k, pub, path
}

// Payload returns n pseudo-random bytes from seed (incompressible, so stored chunks
// are raw and easy to account for).
func Payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Bundle builds a signed bundle name@version with one image component per payload
// (named "c0", "c1", … for slot class "rootfs", "rootfs1", …), compression none.
func Bundle(t testing.TB, key crypto.Signer, name, version string, payloads ...[]byte) []byte {
	t.Helper()
	m := &bundle.Manifest{
		Name:            name,
		Version:         version,
		SecurityVersion: 1,
		Compatible:      []string{"sim"},
		Created:         time.Now().Unix(),
		Severity:        bundle.SeverityNormal,
	}
	var rs []io.Reader
	for i, p := range payloads {
		slot := "rootfs"
		if i > 0 {
			slot = fmt.Sprintf("rootfs%d", i)
		}
		m.Components = append(m.Components, bundle.Component{
			Name: fmt.Sprintf("c%d", i), Kind: bundle.KindImage, Slot: slot,
			Version: version, Compression: bundle.CompressionNone,
		})
		rs = append(rs, bytes.NewReader(p))
	}
	var buf bytes.Buffer
	if err := bundle.Build(context.Background(), &buf, m, rs, []crypto.Signer{key}, bundle.BuildOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatalf("build bundle: %v", err)
	}
	return buf.Bytes()
}

// Start runs a complete hub (SQLite store, chunk directory, embedded broker on a
// free loopback port, HTTP API) in a temporary directory, trusting vendorKey (a PEM
// path; "" for none). edit, when set, adjusts the configuration first. The hub is
// closed at the end of the test.
func Start(t testing.TB, vendorKey string, edit func(*hub.Config)) *hub.Server {
	t.Helper()
	var cfg hub.Config
	cfg.Data = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	if vendorKey != "" {
		cfg.VendorKeys = []string{vendorKey}
	}
	cfg.Tokens = []hub.TokenConfig{
		{Name: "alice", Role: hub.RoleAdmin, Token: AdminToken},
		{Name: "oscar", Role: hub.RoleOperator, Token: OperatorToken},
		{Name: "victor", Role: hub.RoleViewer, Token: ViewerToken},
	}
	if edit != nil {
		edit(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := hub.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start hub: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Client is a raw MQTT v5 client for tests: one connection, no reconnects.
type Client struct {
	*paho.Client
	Received chan *paho.Publish
}

// Connect opens one MQTT v5 connection to addr as clientID with user name = clientID
// and password. It returns the CONNACK (nil when the connection failed before it).
func Connect(ctx context.Context, addr, clientID, password string) (*Client, *paho.Connack, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	return ConnectConn(ctx, conn, clientID, password)
}

// ConnectConn is Connect over an established connection (for example a *tls.Conn).
func ConnectConn(ctx context.Context, conn net.Conn, clientID, password string) (*Client, *paho.Connack, error) {
	c := &Client{Received: make(chan *paho.Publish, 1024)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.Received <- pr.Packet:
			default:
			}
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if password != "" {
		cp.Username, cp.UsernameFlag = clientID, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ack, err := c.Client.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, ack, err
	}
	return c, ack, nil
}
