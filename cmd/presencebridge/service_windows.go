package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/platform/svclog"
)

// runWindowsService runs the daemon under the Windows service manager, logging
// to the Event Log. With the marker (run --service, which service install and
// the MSI put on the service's command line) it always uses the service
// dispatcher. Without it, kardianos/service's detection decides: ok is false
// when it finds a console (then run behaves as on Linux: Ctrl+C stops it).
//
// The detection (x/sys/windows/svc.IsWindowsService: is the parent services.exe
// in session 0?) fails where services run outside session 0, as under Wine, and
// a service that decides it is a console program never answers the service
// manager, which kills it after its start timeout. The marker never guesses.
func runWindowsService(g globals, marked bool) (code int, ok bool) {
	if !marked && service.Interactive() {
		return 0, false
	}
	d := newDaemon(g, nil, false)
	elog, err := eventlog.Open(serviceName)
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge run: open the Event Log: %v\n", err)
		return exitFailure, true
	}
	defer elog.Close()
	d.sys = svclog.EventLog(elog)
	// The work ended by itself: end the process without reporting a stop, a
	// failure for the service manager, whose recovery actions restart it.
	d.onEnded = func(err error) {
		if err != nil {
			_ = d.sys(slog.LevelError, "presencebridge stopped: "+err.Error())
		}
		os.Exit(exitFailure)
	}
	h := &serviceHandler{d: d}
	if err := svc.Run(serviceName, h); err != nil {
		if errors.Is(err, windows.ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
			fmt.Fprintf(g.stderr, "presencebridge run --service: not started by the service manager; start the service with \"presencebridge service start\", or leave out --service to run in this console\n")
			return exitUsage, true
		}
		_ = d.sys(slog.LevelError, "presencebridge: the service dispatcher failed: "+err.Error())
		return exitFailure, true
	}
	return h.code, true
}

// Wait hints given to the service manager while starting and stopping: Start
// reads Presence.ini and opens the state file (a second or so; it never waits on
// the network), Stop waits for the work up to stopDeadline.
const (
	startWaitHint = 30 * time.Second
	stopWaitHint  = stopDeadline + 5*time.Second
)

// serviceHandler is the service's side of the service manager's protocol
// (x/sys/windows/svc.Handler): START_PENDING while the daemon starts, RUNNING
// once it has, STOP_PENDING while it stops. A failed start ends the service
// with the daemon's exit code as the service-specific exit code (3 for a
// broken Presence.ini, as sc query shows it), after the reason went to the
// Event Log. A parameter change (sc control presencebridge paramchange)
// reloads the configuration, as service reload does.
type serviceHandler struct {
	d    *daemon
	code int // the process's exit code once Execute has returned
}

func (h *serviceHandler) Execute(_ []string, r <-chan svc.ChangeRequest, changes chan<- svc.Status) (bool, uint32) {
	changes <- svc.Status{State: svc.StartPending, WaitHint: uint32(startWaitHint / time.Millisecond)}
	if err := h.d.Start(nil); err != nil {
		h.code = h.d.ExitCode()
		return true, uint32(h.code)
	}
	changes <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown | svc.AcceptParamChange}
	for c := range r {
		switch c.Cmd {
		case svc.Interrogate:
			changes <- c.CurrentStatus
		case svc.ParamChange:
			h.d.Reload()
		case svc.Stop, svc.Shutdown:
			changes <- svc.Status{State: svc.StopPending, WaitHint: uint32(stopWaitHint / time.Millisecond)}
			if err := h.d.Stop(nil); err != nil {
				h.code = exitFailure
				return true, exitFailure
			}
			return false, 0
		}
	}
	return false, 0
}

// platformServiceStart restricts the folders holding secrets and sets the
// service's recovery actions (an MSI cannot: wixl has no ServiceConfig).
func platformServiceStart(cfg *config.Config, log *slog.Logger) {
	for _, dir := range uniqueDirs(cfg.Dir, filepath.Dir(cfg.StateFile)) {
		got, err := restrictDir(dir)
		var broad string
		if err == nil {
			broad = broadAccess(got)
		}
		switch {
		case err != nil:
			log.Warn("Could not restrict the folder to SYSTEM and Administrators", "folder", dir, "err", err.Error())
		case broad != "":
			// The call was taken but the ACL read back still lets others in (a
			// file system that keeps no ACLs; Wine, which derives them from the
			// Unix mode): say so rather than trust it.
			log.Warn("The folder's ACL still lets "+broad+" in: the client secret and tokens in it may be readable by other accounts; keep Presence.ini and the state file on a local NTFS disk",
				"folder", dir, "acl", got, "want", tokenDirSDDL)
		default:
			log.Info("Folder restricted to SYSTEM and Administrators", "folder", dir, "acl", got)
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

// restrictDir sets tokenDirSDDL's DACL on dir and returns the DACL read back
// from the file system, as SDDL.
func restrictDir(dir string) (string, error) {
	sd, err := windows.SecurityDescriptorFromString(tokenDirSDDL)
	if err != nil {
		return "", err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return "", err
	}
	if err := windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil); err != nil {
		return "", err
	}
	back, err := windows.GetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return "", fmt.Errorf("read the ACL back: %w", err)
	}
	return back.String(), nil
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
