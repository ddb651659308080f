package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/presencebridge/presencebridge/internal/config"
)

// runWindowsService runs the daemon under the Windows service manager, logging
// to the Event Log; ok is false when started from a console (then run behaves as
// on Linux: Ctrl+C stops it).
func runWindowsService(g globals) (code int, ok bool) {
	if service.Interactive() {
		return 0, false
	}
	d := newDaemon(g, nil, false)
	s, err := service.New(d, serviceConfig(g.configPath))
	if err != nil {
		return exitFailure, true
	}
	elog, err := s.Logger(nil)
	if err != nil {
		return exitFailure, true
	}
	d.sys = func(l slog.Level, line string) error {
		switch {
		case l >= slog.LevelError:
			return elog.Error(line)
		case l >= slog.LevelWarn:
			return elog.Warning(line)
		default:
			return elog.Info(line)
		}
	}
	// The work ended by itself: end the process with a failure so that the
	// recovery actions restart the service.
	d.onEnded = func(err error) {
		if err != nil {
			_ = d.sys(slog.LevelError, "presencebridge stopped: "+err.Error())
		}
		os.Exit(exitFailure)
	}
	if err := s.Run(); err != nil {
		if c := d.ExitCode(); c != exitOK {
			return c, true
		}
		return exitFailure, true
	}
	return exitOK, true
}

// tokenDirSDDL gives the folder of Presence.ini and the state file to SYSTEM and
// Administrators only, not inherited from ProgramData (where Users may read):
// the state file holds refresh tokens and Presence.ini the client secret.
const tokenDirSDDL = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"

// platformServiceStart restricts the folders holding secrets and sets the
// service's recovery actions (an MSI cannot: wixl has no ServiceConfig).
func platformServiceStart(cfg *config.Config, log *slog.Logger) {
	for _, dir := range uniqueDirs(cfg.Dir, filepath.Dir(cfg.StateFile)) {
		if err := restrictDir(dir); err != nil {
			log.Warn("Could not restrict the folder to SYSTEM and Administrators", "folder", dir, "err", err.Error())
		}
	}
	if err := setRecovery(); err != nil {
		log.Warn("Could not set the service's recovery actions (restart on failure)", "err", err.Error())
	}
}

func uniqueDirs(dirs ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

func restrictDir(dir string) error {
	sd, err := windows.SecurityDescriptorFromString(tokenDirSDDL)
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}

// setRecovery restarts the service recoveryDelay after a failure, three times,
// the count reset after recoveryReset without one.
func setRecovery() error {
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return err
	}
	defer s.Close()
	act := mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: recoveryDelay}
	return s.SetRecoveryActions([]mgr.RecoveryAction{act, act, act}, uint32(recoveryReset.Seconds()))
}
