package svclog

import (
	"log/slog"

	"golang.org/x/sys/windows/svc/eventlog"
)

// EventLog writes each line to the Application Event Log through elog (opened
// for the service's event source), with the event type following the level.
// Every entry has event ID 1: the EventCreate.exe message file that the MSI and
// service install register shows the text as it is.
func EventLog(elog *eventlog.Log) Sink {
	return func(l slog.Level, line string) error {
		switch {
		case l >= slog.LevelError:
			return elog.Error(1, line)
		case l >= slog.LevelWarn:
			return elog.Warning(1, line)
		default:
			return elog.Info(1, line)
		}
	}
}
