package procgroup

import "syscall"

// Supported says whether children can be started in a group of their own here.
const Supported = true

// Attr puts the child in its own session and process group; death is the signal
// it gets should this process die without stopping it.
func Attr(death syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: death}
}

// Kill kills every process left in the group the child with this PID leads.
func Kill(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// Signal sends sig to every process in the group the child with this PID leads.
func Signal(pid int, sig syscall.Signal) { _ = syscall.Kill(-pid, sig) }
