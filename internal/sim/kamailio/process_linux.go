package kamailio

import (
	"os"
	"syscall"
)

// sysProcAttr puts Kamailio in its own session and process group: on SIGTERM it
// signals its whole group, which must not be ours. Pdeathsig ends it should
// this process die without calling Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
}

// terminate asks Kamailio's main process to shut down; it passes the signal on
// to its workers.
func terminate(p *os.Process) { _ = p.Signal(syscall.SIGTERM) }

// killGroup kills every process left in the group Kamailio leads.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// supported says whether Start can run Kamailio on this system.
const supported = true
