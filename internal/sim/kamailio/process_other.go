//go:build !linux

package kamailio

import (
	"os"
	"syscall"
)

// Kamailio for tests runs on Linux only; elsewhere Find reports it missing, so
// the package still builds (the Windows binary links the demo code).

func sysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p *os.Process) { _ = p.Kill() }

func killGroup(pid int) {}

const supported = false
