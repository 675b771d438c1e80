package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/autopatcher/autopatcher/transport"
)

// Server is a running hub: store, chunk directory, broker (embedded or external),
// and HTTP API.
type Server struct {
	Hub    *Hub
	Broker *Broker // nil with an external broker
	API    *API

	store   Store
	bus     *ConnBus
	httpSrv *http.Server
	httpLn  net.Listener
	log     *slog.Logger
}

// Start opens the store and starts the broker and the HTTP API described by cfg.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	cfg.Defaults()
	if log == nil {
		log = slog.Default()
	}
	for _, d := range []string{cfg.Data, cfg.uploadPath()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("start hub: %w", err)
		}
	}
	trust, err := cfg.trust()
	if err != nil {
		return nil, fmt.Errorf("start hub: %w", err)
	}
	toks, err := cfg.tokens()
	if err != nil {
		return nil, fmt.Errorf("start hub: %w", err)
	}
	opt := Options{Trust: trust, RequireCerts: cfg.MQTT.RequireCerts, HubPassword: cfg.MQTT.HubPassword,
		TempDir: cfg.uploadPath(), Log: log}
	if cfg.DeviceCA != "" {
		if opt.DeviceCA, err = transport.LoadPool(cfg.DeviceCA); err != nil {
			return nil, fmt.Errorf("start hub: device ca: %w", err)
		}
	}
	s := &Server{log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	st, err := OpenStore(ctx, cfg.Store, cfg.Data)
	if err != nil {
		return nil, err
	}
	s.store = st
	opt.Store = st
	if opt.Chunks, err = OpenChunks(cfg.chunkPath()); err != nil {
		return nil, err
	}
	if s.Hub, err = New(opt); err != nil {
		return nil, err
	}
	// Nobody is connected yet, whatever the store says from the last run; and no
	// upload is under way, so unreferenced chunks are leftovers of an interrupted one.
	if err := s.Hub.resetPresence(ctx); err != nil {
		return nil, err
	}
	if _, err := s.Hub.CollectGarbage(ctx); err != nil {
		return nil, err
	}

	if cfg.MQTT.Broker != "" {
		tc := transport.Config{
			Servers:    []string{cfg.MQTT.Broker},
			ClientID:   transport.Hub,
			Username:   transport.Hub,
			Password:   []byte(cfg.MQTT.HubPassword),
			AllowPlain: strings.HasPrefix(cfg.MQTT.Broker, "mqtt://"),
			Logger:     log,
		}
		if cfg.MQTT.CA != "" {
			tc.TLS = &transport.TLSSettings{CA: cfg.MQTT.CA}
		}
		conn, err := transport.Dial(ctx, tc)
		if err != nil {
			return nil, fmt.Errorf("start hub: connect to broker %s: %w", cfg.MQTT.Broker, err)
		}
		s.bus = NewConnBus(conn, log)
		if err := s.Hub.Attach(s.bus); err != nil {
			return nil, err
		}
	} else {
		tcfg, err := cfg.brokerTLS()
		if err != nil {
			return nil, fmt.Errorf("start hub: %w", err)
		}
		addr := cfg.MQTT.Addr
		if addr == "-" {
			addr = ""
		}
		s.Broker, err = NewBroker(BrokerConfig{TCPAddr: addr, TLSAddr: cfg.MQTT.TLSAddr, TLS: tcfg, Gate: s.Hub, Log: log})
		if err != nil {
			return nil, err
		}
		if err := s.Hub.Attach(s.Broker); err != nil {
			return nil, err
		}
	}

	if s.API, err = NewAPI(s.Hub, toks, cfg.HTTP.MaxUpload); err != nil {
		return nil, fmt.Errorf("start hub: %w", err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTP.Addr); err != nil {
		return nil, fmt.Errorf("start hub: http: %w", err)
	}
	s.httpSrv = &http.Server{Handler: s.API, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		var err error
		if cfg.HTTP.TLSCert != "" && cfg.HTTP.TLSKey != "" {
			err = s.httpSrv.ServeTLS(s.httpLn, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		} else {
			err = s.httpSrv.Serve(s.httpLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("hub started", "data", cfg.Data, "http", s.HTTPAddr(), "mqtt", s.MQTTAddr(), "broker", cfg.MQTT.Broker)
	return s, nil
}

// HTTPAddr is the bound address of the API.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// MQTTAddr is the bound address of the embedded broker's plain listener.
func (s *Server) MQTTAddr() string {
	if s.Broker == nil {
		return ""
	}
	return s.Broker.TCPAddr()
}

// MQTTTLSAddr is the bound address of the embedded broker's TLS listener.
func (s *Server) MQTTTLSAddr() string {
	if s.Broker == nil {
		return ""
	}
	return s.Broker.TLSAddr()
}

// Close stops everything.
func (s *Server) Close() error {
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.httpSrv.Shutdown(ctx)
		cancel()
	} else if s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.Hub != nil {
		s.Hub.Close()
	}
	if s.Broker != nil {
		s.Broker.Close()
	}
	if s.bus != nil {
		s.bus.Close()
	}
	if s.store != nil {
		return s.store.Close()
	}
	return nil
}
