package main

import "github.com/kardianos/service"

// installService registers the Windows service (kardianos/service: automatic
// start, restart on failure, the Event Log source).
func installService(_ globals, s service.Service) error { return s.Install() }

func uninstallService(s service.Service) error { return s.Uninstall() }
