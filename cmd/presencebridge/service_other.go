//go:build !windows

package main

import (
	"log/slog"

	"github.com/presencebridge/presencebridge/internal/config"
)

// runWindowsService is for Windows' service manager; elsewhere the service is a
// plain process (ok is false), with or without run's --service marker: systemd
// is told apart by its environment (NOTIFY_SOCKET, JOURNAL_STREAM).
func runWindowsService(globals, bool) (code int, ok bool) { return 0, false }

// platformServiceStart does what Windows needs at each start; nothing here (the
// DEB's postinst and the unit set owners, modes and restarts).
func platformServiceStart(*config.Config, *slog.Logger) {}
