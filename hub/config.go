package hub

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/autopatcher/autopatcher/bundle"
)

// Config is the hub's configuration, read from YAML (autopatch-hub serve -c hub.yaml).
// Every field's default is given in its comment; docs/hub.md shows a full example.
type Config struct {
	// Data is the data directory: hub.db (SQLite) and chunks/. Default "autopatch-hub-data".
	Data string `yaml:"data"`
	// Store selects the database: "" (SQLite in DATA/hub.db) or "sqlite:PATH". Default "".
	Store string `yaml:"store"`
	HTTP  struct {
		// Addr of the HTTP API. Default "127.0.0.1:8080".
		Addr string `yaml:"addr"`
		// TLSCert and TLSKey serve the API over HTTPS when both are set. Default: plain HTTP.
		TLSCert string `yaml:"tls_cert"`
		TLSKey  string `yaml:"tls_key"`
		// MaxUpload caps a bundle upload in bytes. Default 8 GiB.
		MaxUpload int64 `yaml:"max_upload"`
	} `yaml:"http"`
	MQTT struct {
		// Addr of the embedded broker's plain TCP listener. Default "127.0.0.1:1883"; "-" disables it.
		Addr string `yaml:"addr"`
		// TLSAddr of the embedded broker's TLS listener. Default: disabled.
		TLSAddr string `yaml:"tls_addr"`
		// TLSCert and TLSKey are the broker's server certificate (required with TLSAddr).
		TLSCert string `yaml:"tls_cert"`
		TLSKey  string `yaml:"tls_key"`
		// RequireCerts refuses devices without a client certificate. Default false
		// (devices may use a per-device user name and password).
		RequireCerts bool `yaml:"require_certs"`
		// Broker is an external broker URL (mqtt://host:port or mqtts://host:port);
		// when set, no embedded broker runs and the broker enforces the ACL. Default "".
		Broker string `yaml:"broker"`
		// HubPassword is the hub identity's password on an external broker, and lets a
		// remote client act as the hub on the embedded one. Default "" (none).
		HubPassword string `yaml:"hub_password"`
		// CA verifies an external broker's certificate (mqtts://). Default: system roots.
		CA string `yaml:"ca"`
	} `yaml:"mqtt"`
	// VendorKeys are PEM public key files; uploads must be signed by them. Required for uploads.
	VendorKeys []string `yaml:"vendor_keys"`
	// Threshold is how many distinct vendor keys must have signed. Default 1.
	Threshold int `yaml:"threshold"`
	// Revoked lists key ids that no longer count. Default none.
	Revoked []string `yaml:"revoked"`
	// DeviceCA is a PEM file of CA certificates; devices whose client certificate
	// chains to one are accepted without an operator. Default "" (every device starts pending).
	DeviceCA string `yaml:"device_ca"`
	// Tokens are the API tokens and their roles (admin, operator, viewer). A token may be
	// given inline or read from an environment variable with token_env. Default none
	// (every API call is refused).
	Tokens []TokenConfig `yaml:"tokens"`
}

// TokenConfig is one API token entry of the configuration.
type TokenConfig struct {
	Name     string `yaml:"name"`
	Role     Role   `yaml:"role"`
	Token    string `yaml:"token"`
	TokenEnv string `yaml:"token_env"`
}

// Defaults fills in the documented defaults.
func (c *Config) Defaults() {
	if c.Data == "" {
		c.Data = "autopatch-hub-data"
	}
	if c.HTTP.Addr == "" {
		c.HTTP.Addr = "127.0.0.1:8080"
	}
	if c.MQTT.Addr == "" {
		c.MQTT.Addr = "127.0.0.1:1883"
	}
	if c.Threshold == 0 {
		c.Threshold = 1
	}
}

// LoadConfig reads a YAML configuration; unknown fields are an error.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	var c Config
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return &c, nil
}

// trust builds the vendor trust store.
func (c *Config) trust() (*bundle.Trust, error) {
	t := &bundle.Trust{Threshold: c.Threshold, Revoked: c.Revoked}
	for _, p := range c.VendorKeys {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("vendor key: %w", err)
		}
		k, err := bundle.ReadPublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("vendor key %s: %w", p, err)
		}
		t.Keys = append(t.Keys, k)
	}
	return t, nil
}

func (c *Config) tokens() ([]Token, error) {
	var out []Token
	for i, t := range c.Tokens {
		secret := t.Token
		if t.TokenEnv != "" {
			secret = os.Getenv(t.TokenEnv)
			if secret == "" {
				return nil, fmt.Errorf("api token %d (%s): environment variable %s is empty", i+1, t.Name, t.TokenEnv)
			}
		}
		out = append(out, Token{Name: t.Name, Role: t.Role, Token: secret})
	}
	return out, nil
}

func (c *Config) brokerTLS() (*tls.Config, error) {
	if c.MQTT.TLSAddr == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.MQTT.TLSCert, c.MQTT.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("mqtt tls: %w", err)
	}
	auth := tls.RequestClientCert // verified against device_ca and pinned by the registry
	if c.MQTT.RequireCerts {
		auth = tls.RequireAnyClientCert
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: auth, MinVersion: tls.VersionTLS12}, nil
}

func (c *Config) chunkPath() string  { return filepath.Join(c.Data, "chunks") }
func (c *Config) uploadPath() string { return filepath.Join(c.Data, "tmp") }
