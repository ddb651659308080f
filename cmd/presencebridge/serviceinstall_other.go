//go:build !windows

package main

import "github.com/kardianos/service"

// installService writes the systemd unit through kardianos/service.
func installService(_ globals, s service.Service) error { return s.Install() }

func uninstallService(s service.Service) error { return s.Uninstall() }
