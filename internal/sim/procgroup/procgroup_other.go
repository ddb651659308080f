//go:build !linux

package procgroup

import "syscall"

// Supported is false: the harnesses run their programs on Linux only; elsewhere
// they report them missing, so the packages still build (the Windows binary
// links the demo code).
const Supported = false

// Attr is nil here.
func Attr(death syscall.Signal) *syscall.SysProcAttr { return nil }

// Kill does nothing here.
func Kill(pid int) {}

// Signal does nothing here.
func Signal(pid int, sig syscall.Signal) {}
