package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/control"
	"github.com/presencebridge/presencebridge/internal/logfile"
	"github.com/presencebridge/presencebridge/internal/store"
)

func newConsoleLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// newServiceLogger is run's logger: [General] LogLevel, LogFormat and LogFile.
func newServiceLogger(console io.Writer, cfg *config.Config) (*slog.Logger, func(), error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))); err != nil {
		l = slog.LevelInfo
	}
	w, closeFn := console, func() {}
	if cfg.LogFile != "" {
		f, err := logfile.Open(cfg.LogFile, 10<<20, 5)
		if err != nil {
			return nil, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	opts := &slog.HandlerOptions{Level: l}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), closeFn, nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), closeFn, nil
}

// loadConfig loads Presence.ini; on failure it prints every problem and returns nil.
func loadConfig(g globals) *config.Config {
	cfg, err := config.Load(g.configPath)
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge: %v\n", err)
		return nil
	}
	return cfg
}

// openApp opens the App for a one-shot command. inUse is true when the service (or
// another command) holds the state file, in which case the caller asks the service.
func openApp(g globals, cfg *config.Config, logger *slog.Logger) (a *app.App, inUse bool, code int) {
	a, err := app.Open(app.Options{Config: cfg, Logger: logger, Version: version})
	switch {
	case err == nil:
		return a, false, exitOK
	case errors.Is(err, store.ErrInUse):
		return nil, true, exitOK
	case errors.Is(err, app.ErrConfig):
		fmt.Fprintf(g.stderr, "presencebridge: %v\n", err)
		return nil, false, exitConfig
	default:
		fmt.Fprintf(g.stderr, "presencebridge: %v\n", err)
		return nil, false, exitFailure
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdRun(g globals, args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(g.stderr, "presencebridge run: unexpected arguments %q\n", args)
		return exitUsage
	}
	cfg := loadConfig(g)
	if cfg == nil {
		return exitConfig
	}
	logger, closeLog, err := newServiceLogger(g.stderr, cfg)
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge run: %v\n", err)
		return exitConfig
	}
	defer closeLog()
	ctx, stop := signalContext()
	defer stop()
	// SIGHUP (or an edit of Presence.ini or the users file) reloads the configuration.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	trigger := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case trigger <- struct{}{}:
			default:
			}
		}
	}()
	err = app.RunWithReload(ctx, app.ReloadOptions{Options: app.Options{Config: cfg, Logger: logger, Version: version}, Trigger: trigger})
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge run: %v\n", err)
		switch {
		case errors.Is(err, store.ErrInUse):
			fmt.Fprintln(g.stderr, "presencebridge run: another presencebridge is already running with this state file")
			return exitFailure
		case errors.Is(err, app.ErrConfig):
			return exitConfig
		}
		return exitFailure
	}
	return exitOK
}

// viaAppOrService runs local with the App when the state file is free, or remote
// with a control client when the running service holds it. It returns an exit code
// (exitOK when the work ran) and the work's error.
func viaAppOrService(g globals, cfg *config.Config, logger *slog.Logger, local func(*app.App) error, remote func(*control.Client) error) (int, error) {
	a, inUse, code := openApp(g, cfg, logger)
	if code != exitOK {
		return code, nil
	}
	if !inUse {
		defer a.Close()
		return exitOK, local(a)
	}
	c, err := control.NewClient(app.KeyFile(cfg))
	if err == nil {
		err = remote(c)
	}
	if errors.Is(err, control.ErrNotRunning) {
		err = fmt.Errorf("the state file %s is in use, but no service answers; stop the other presencebridge command and try again", cfg.StateFile)
	}
	return exitOK, err
}
