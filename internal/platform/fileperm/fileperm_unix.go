//go:build !windows

package fileperm

import (
	"os"
	"path/filepath"
	"syscall"
)

// Adopt gives path the owner and group of its folder when the caller is root and
// the folder is not root's. With groupRead the file becomes readable by the
// folder's group (0640): the key file in /etc/presencebridge, which the service
// reads as a member of that group. Elsewhere it does nothing.
func Adopt(path string, groupRead bool) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (st.Uid == 0 && st.Gid == 0) {
		return nil
	}
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if groupRead && st.Gid != 0 {
		return os.Chmod(path, 0o640)
	}
	return nil
}
