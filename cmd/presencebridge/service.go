package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/kardianos/service"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/packaging"
)

const serviceUsage = `Usage: presencebridge [--config PATH] service <action>

Actions:
  install     register the service (Windows service, or a systemd unit) to run
              "presencebridge --config PATH run" at boot (on Windows with
              run's --service marker), restarted on failure
  uninstall   remove it (the configuration and the state file stay)
  start       check Presence.ini, then start the service
  stop        stop it; pushes in flight finish or stay queued for the next start
  restart     check Presence.ini, then restart it
  status      print running, stopped or not installed
  reload      make the running service read Presence.ini and the users file
              again, and print whether it took them
  unit        print the systemd unit install would write (Linux)

The DEB and the MSI register the service themselves: install is for a copied binary.
`

// cmdService drives the installed service through kardianos/service.
func cmdService(g globals, args []string) int {
	if len(args) != 1 {
		fmt.Fprint(g.stderr, serviceUsage)
		return exitUsage
	}
	path, err := filepath.Abs(g.configPath)
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge service: %v\n", err)
		return exitUsage
	}
	g.configPath = path
	action := args[0]
	switch action {
	case "reload":
		return serviceReload(g)
	case "unit":
		cfg := loadConfig(g)
		if cfg == nil {
			return exitConfig
		}
		p, err := unitParamsFor(cfg)
		if err != nil {
			fmt.Fprintf(g.stderr, "presencebridge service unit: %v\n", err)
			return exitFailure
		}
		fmt.Fprint(g.stdout, packaging.Unit(p))
		return exitOK
	case "install", "uninstall", "start", "stop", "restart", "status":
	default:
		fmt.Fprintf(g.stderr, "presencebridge service: unknown action %q\n\n%s", action, serviceUsage)
		return exitUsage
	}
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			fmt.Fprintf(g.stderr, "presencebridge service %s: systemd is not running on this machine (a container?); run \"presencebridge --config %s run\" under the supervisor it has instead\n", action, path)
			return exitFailure
		}
	}
	s, err := service.New(newDaemon(g, nil, true), serviceConfig(path))
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge service: %v\n", err)
		return exitFailure
	}
	if action == "status" {
		return serviceStatus(g, s)
	}
	var cfg *config.Config
	if action == "start" || action == "restart" || action == "install" {
		// A bad Presence.ini would only show in the service's log: say it here.
		if cfg = loadConfig(g); cfg == nil {
			fmt.Fprintf(g.stderr, "presencebridge service %s: not done; fix %s first (presencebridge verify --offline checks it)\n", action, path)
			return exitConfig
		}
	}
	switch action {
	case "install":
		err = installService(g, cfg, s)
	case "uninstall":
		err = uninstallService(s)
	default:
		err = service.Control(s, action)
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge service %s: %v\n", action, err)
		return exitFailure
	}
	fmt.Fprintf(g.stdout, "presencebridge service %s: done\n", action)
	if action == "install" {
		fmt.Fprintf(g.stdout, "Next: presencebridge --config %s verify, presencebridge --config %s login, presencebridge service start\n", path, path)
	}
	return exitOK
}

// serviceStatus prints running, stopped or not installed.
func serviceStatus(g globals, s service.Service) int {
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		fmt.Fprintln(g.stdout, "not installed")
		return exitNotReady
	case err != nil:
		fmt.Fprintf(g.stderr, "presencebridge service status: %v\n", err)
		return exitFailure
	case st == service.StatusRunning:
		fmt.Fprintln(g.stdout, "running")
		return exitOK
	default:
		fmt.Fprintln(g.stdout, "stopped")
		return exitNotReady
	}
}

// serviceReload asks the running service, through its control endpoint, to read
// its configuration again.
func serviceReload(g globals) int {
	cfg := loadConfig(g)
	if cfg == nil {
		fmt.Fprintln(g.stderr, "presencebridge service reload: not asked; the service would refuse this file (the running configuration stays)")
		return exitConfig
	}
	c, err := control.NewClient(app.KeyFile(cfg))
	if err == nil {
		var result string
		if result, err = askReload(c, control.ReloadRequest{}); err == nil {
			fmt.Fprintf(g.stdout, "presencebridge service reload: %s\n", result)
			return exitOK
		}
	}
	if errors.Is(err, control.ErrNotRunning) {
		err = fmt.Errorf("%w (is it running? presencebridge service status)", err)
	}
	fmt.Fprintf(g.stderr, "presencebridge service reload: %v\n", err)
	return exitFailure
}
