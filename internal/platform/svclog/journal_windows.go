package svclog

// StderrIsJournal is false on Windows: the service logs to the Event Log.
func StderrIsJournal() bool { return false }
