//go:build !windows

package main

import "github.com/kardianos/service"

// installService writes presencebridge's own hardened unit (the one the DEB
// ships) rather than kardianos/service's generic one.
func installService(g globals, _ service.Service) error { return installUnit(g) }

func uninstallService(service.Service) error { return uninstallUnit() }
