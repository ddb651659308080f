package main

import (
	"github.com/kardianos/service"

	"github.com/presencebridge/presencebridge/internal/config"
)

// installService registers the Windows service (kardianos/service: automatic
// start, restart on failure, the Event Log source).
func installService(_ globals, _ *config.Config, s service.Service) error { return s.Install() }

func uninstallService(s service.Service) error { return s.Uninstall() }
