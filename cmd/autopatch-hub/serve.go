package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/autopatcher/autopatcher/hub"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "YAML configuration file (see docs/hub.md)")
	data := fs.String("data", "", "data directory (default from config, else autopatch-hub-data)")
	mqttAddr := fs.String("mqtt-addr", "", `embedded broker TCP listener (default 127.0.0.1:1883; "-" disables)`)
	httpAddr := fs.String("http-addr", "", "HTTP API listener (default 127.0.0.1:8080)")
	broker := fs.String("broker", "", "external broker URL (mqtt:// or mqtts://); disables the embedded broker")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	var cfg hub.Config
	if *cfgPath != "" {
		c, err := hub.LoadConfig(*cfgPath)
		if err != nil {
			return err
		}
		cfg = *c
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{{*data, &cfg.Data}, {*mqttAddr, &cfg.MQTT.Addr}, {*httpAddr, &cfg.HTTP.Addr}, {*broker, &cfg.MQTT.Broker}} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("serve: --log-level %q: %w", *level, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	s, err := hub.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "autopatch-hub: http=%s mqtt=%s\n", s.HTTPAddr(), s.MQTTAddr())
	<-ctx.Done()
	log.Info("hub stopping")
	return s.Close()
}
