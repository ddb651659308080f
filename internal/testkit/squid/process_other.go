//go:build !linux

package squid

import (
	"os"
	"syscall"
)

// Squid for tests runs on Linux only; elsewhere Find reports it missing, so
// the package still builds.

func sysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p *os.Process) { _ = p.Kill() }

func killGroup(pid int) {}

const supported = false
