package wine

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

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
