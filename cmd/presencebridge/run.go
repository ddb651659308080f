package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/platform/svclog"
	"github.com/presencebridge/presencebridge/internal/store"
)

// logLevel is the slog level of a [General] LogLevel value (config.Load has
// checked it; anything else is info).
func logLevel(level string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return slog.LevelInfo
	}
	return l
}

func newConsoleLogger(w io.Writer, level string) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: logLevel(level)}))
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
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	// The installed service's command line carries --service (service install,
	// the MSI): on Windows it then always talks to the service manager.
	asService := fs.Bool("service", false, "started by the service manager (the installed service's command line)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintf(g.stderr, "presencebridge run: unexpected arguments %q (usage: presencebridge run [--service])\n", args)
		return exitUsage
	}
	if code, ok := runWindowsService(g, *asService); ok {
		return code
	}
	// On Linux the service is a plain process that systemd starts; its stderr is
	// the journal, and readiness goes through NOTIFY_SOCKET.
	sys, console := svclog.Sink(lineSink(g.stderr)), true
	if svclog.StderrIsJournal() {
		sys, console = svclog.Journal(g.stderr), false
	}
	d := newDaemon(g, sys, console)
	ctx, stop := signalContext()
	defer stop()
	// SIGHUP (or an edit of Presence.ini or the users file) reloads the configuration.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// Start reads Presence.ini and the users file and opens the state file; a
	// stop asked for meanwhile (a wrong file given as the users file can take
	// seconds to read) ends the process at once: nothing is running yet, and
	// bbolt's file is safe whenever the process ends.
	started := make(chan error, 1)
	go func() { started <- d.Start(nil) }()
	select {
	case err := <-started:
		if err != nil {
			return d.ExitCode()
		}
	case <-ctx.Done():
		fmt.Fprintln(g.stderr, "presencebridge: stopped while starting")
		return exitOK
	}
	go func() {
		for range hup {
			d.Reload()
		}
	}()
	select {
	case <-ctx.Done():
	case <-d.Ended():
		// The work ended by itself: a failure for systemd to see (Restart=on-failure).
		if err := d.Err(); err != nil {
			d.Log().Error("presencebridge stopped", "err", err.Error())
			return exitFailure
		}
		return exitOK
	}
	if err := d.Stop(nil); err != nil {
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
		err = errNoServiceAnswers(cfg.StateFile)
	}
	return exitOK, err
}

// errNoServiceAnswers is the error of a command that found the state file in use
// but no service to ask instead.
func errNoServiceAnswers(stateFile string) error {
	return fmt.Errorf("the state file %s is in use, but no service answers; stop the other presencebridge command and try again", stateFile)
}

// askReload asks the running service to reload as req says, and returns the
// result it reports.
func askReload(c *control.Client, req control.ReloadRequest) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res map[string]string
	if err := c.Reload(ctx, req, &res); err != nil {
		return "", err
	}
	return res["result"], nil
}
