package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/kardianos/service"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/platform/logfile"
	"github.com/presencebridge/presencebridge/internal/platform/sdnotify"
	"github.com/presencebridge/presencebridge/internal/platform/svclog"
	"github.com/presencebridge/presencebridge/internal/store"
)

// stopDeadline bounds a graceful stop: below systemd's TimeoutStopSec (30 s in
// the unit) and Windows' 20 s wait for a stopping service at shutdown.
const stopDeadline = 18 * time.Second

// daemon is the service's job as a service manager drives it (kardianos/service's
// Interface). Start reads and checks the configuration and opens the state file
// before it returns, so a bad configuration or a second instance fails the start
// itself, with the reason in the system's log; Stop ends the work and waits for
// it (pushes in flight finish or stay queued, the state file is closed).
type daemon struct {
	g       globals
	sys     svclog.Sink // the system's log: journal, Event Log or console
	console bool        // sys is the console: config errors print as they do for other commands
	trigger chan struct{}

	// onEnded, if set, is called when the work ends by itself (not through Stop),
	// a failure the service manager should see and restart the service for.
	onEnded func(err error)

	mu       sync.Mutex
	code     int // exit code when Start fails
	cancel   context.CancelFunc
	ended    chan struct{} // closed when the work has ended; runErr is then set
	runErr   error
	stopping bool
	closeLog func()
	log      *slog.Logger
}

func newDaemon(g globals, sys svclog.Sink, console bool) *daemon {
	return &daemon{g: g, sys: sys, console: console, trigger: make(chan struct{}, 1), closeLog: func() {}}
}

// fail reports why the service cannot start, to the system's log, and keeps the
// exit code.
func (d *daemon) fail(code int, err error) error {
	d.mu.Lock()
	d.code = code
	d.mu.Unlock()
	_ = d.sys(slog.LevelError, "presencebridge: "+err.Error())
	return err
}

// Start implements service.Interface.
func (d *daemon) Start(service.Service) error {
	cfg, err := config.Load(d.g.configPath)
	if err != nil {
		return d.fail(exitConfig, err)
	}
	log, closeLog, err := newServiceLogger(d.sys, d.console, cfg)
	if err != nil {
		return d.fail(exitConfig, fmt.Errorf("%s: [General] LogFile: %w", cfg.Path, err))
	}
	platformServiceStart(cfg, log)
	opts := app.Options{Config: cfg, Logger: log, Version: version, RefuseMassRemoval: true}
	a, err := app.Open(opts)
	if err != nil {
		closeLog()
		switch {
		case errors.Is(err, store.ErrInUse):
			return d.fail(exitInUse, fmt.Errorf("presencebridge is already running with the state file %s: stop the other one first (presencebridge service stop), or give this one its own [General] StateFile", cfg.StateFile))
		case errors.Is(err, app.ErrConfig):
			return d.fail(exitConfig, err)
		}
		return d.fail(exitFailure, err)
	}
	log.Info("presencebridge started", "version", version, "config", cfg.Path)
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	d.mu.Lock()
	d.cancel, d.ended, d.closeLog, d.log = cancel, ended, closeLog, log
	d.mu.Unlock()
	go func() {
		err := app.RunWithReload(ctx, app.ReloadOptions{Options: opts, Trigger: d.trigger, Opened: a})
		d.mu.Lock()
		d.runErr = err
		stopping := d.stopping
		d.mu.Unlock()
		close(ended)
		if !stopping && d.onEnded != nil {
			d.onEnded(err)
		}
	}()
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("Could not tell systemd that presencebridge is ready", "err", err.Error())
	}
	return nil
}

// Reload asks for Presence.ini and the users file to be read again.
func (d *daemon) Reload() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

// Ended is closed when the work has ended, by Stop or by itself; Err then tells
// how it ended.
func (d *daemon) Ended() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ended
}

// Err is how the work ended (nil for a clean stop).
func (d *daemon) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runErr
}

// Log is the service's logger once Start has succeeded.
func (d *daemon) Log() *slog.Logger {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log
}

// ExitCode is the exit code for a failed Start.
func (d *daemon) ExitCode() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.code
}

// Stop implements service.Interface: the work is cancelled and waited for, up to
// stopDeadline.
func (d *daemon) Stop(service.Service) error {
	d.mu.Lock()
	cancel, ended, log, closeLog := d.cancel, d.ended, d.log, d.closeLog
	d.stopping = true
	d.mu.Unlock()
	if cancel == nil {
		return nil
	}
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	log.Info("presencebridge stopping")
	cancel()
	select {
	case <-ended:
		err := d.Err()
		if err != nil {
			log.Error("presencebridge stopped with an error", "err", err.Error())
		} else {
			log.Info("presencebridge stopped")
		}
		closeLog()
		return err
	case <-time.After(stopDeadline):
		err := fmt.Errorf("presencebridge did not stop within %s; it is ended now (the state file is safe: bbolt commits are atomic, and what was not yet delivered is still queued in it)", stopDeadline)
		log.Error(err.Error())
		closeLog()
		return err
	}
}

// newServiceLogger is run's logger from [General] LogLevel, LogFormat and
// LogFile: to the file when LogFile is set, else to sys (the journal, the Event
// Log or the console).
func newServiceLogger(sys svclog.Sink, console bool, cfg *config.Config) (*slog.Logger, func(), error) {
	o := svclog.Options{Level: logLevel(cfg.LogLevel), JSON: cfg.LogFormat == "json", NoTime: !console}
	if cfg.LogFile == "" {
		return svclog.New(sys, o), func() {}, nil
	}
	f, err := logfile.Open(cfg.LogFile, 10<<20, 5)
	if err != nil {
		return nil, nil, err
	}
	o.NoTime = false
	return svclog.New(lineSink(f), o), func() { f.Close() }, nil
}

// lineSink writes each record as a line to w (the console or a log file).
func lineSink(w io.Writer) svclog.Sink {
	return func(_ slog.Level, line string) error {
		_, err := io.WriteString(w, line+"\n")
		return err
	}
}

// serviceName is the name of the Windows service and of the systemd unit.
const serviceName = "presencebridge"

// A failed Windows service is restarted after recoveryDelay; the failure count
// starts over after recoveryReset without one.
const (
	recoveryDelay = 5 * time.Second
	recoveryReset = 24 * time.Hour
)

// serviceConfig is what kardianos/service installs and controls: the config path
// and the --service marker are baked into the arguments, and a failed service is
// restarted (Windows recovery actions; the systemd unit has Restart=on-failure).
func serviceConfig(configPath string) *service.Config {
	return &service.Config{
		Name:        serviceName,
		DisplayName: "presencebridge (Teams presence for the PBX)",
		Description: "Brings Microsoft Teams presence into the phone system. Configuration: " + configPath,
		Arguments:   []string{"--config", configPath, "run", "--service"},
		Option: service.KeyValue{
			"StartType":              "automatic",
			"OnFailure":              "restart",
			"OnFailureDelayDuration": recoveryDelay.String(),
			"OnFailureResetPeriod":   int(recoveryReset.Seconds()),
		},
	}
}
