//go:build !windows

package main

import (
	"github.com/kardianos/service"

	"github.com/presencebridge/presencebridge/internal/config"
)

// installService writes presencebridge's own hardened unit (the one the DEB
// ships) rather than kardianos/service's generic one.
func installService(g globals, cfg *config.Config, _ service.Service) error {
	return installUnit(g, cfg)
}

func uninstallService(service.Service) error { return uninstallUnit() }
