package squid

import (
	"os"
	"syscall"
)

// sysProcAttr puts Squid in its own session and process group, with its
// helpers: Stop can then end the group without touching ours. Pdeathsig ends
// it should this process die without calling Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
}

// terminate kills Squid's main process.
func terminate(p *os.Process) { _ = p.Kill() }

// killGroup kills Squid and its helpers: the group it leads.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// supported says whether Start can run Squid on this system.
const supported = true
