//go:build !linux

package wine

import (
	"errors"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(int) {}

func serverDirName(string) (string, error) { return "", errors.New("wine: Linux only") }

// supported says whether the harness runs on this system: Wine prefixes are
// run on Linux only.
const supported = false
