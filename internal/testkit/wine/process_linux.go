package wine

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// sysProcAttr puts wineserver in its own session, and SIGKILL ends it should
// the test process die without Close: its clients (every Wine process of the
// prefix, services included) then exit with it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills the process group pid leads.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// serverDirName is the name of the folder wineserver works in for the prefix
// dir: server-<device>-<inode> in hex.
func serverDirName(dir string) (string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("wine: cannot read the prefix's device and inode")
	}
	return fmt.Sprintf("server-%x-%x", uint64(sys.Dev), uint64(sys.Ino)), nil
}

// supported says whether the harness runs on this system.
const supported = true
