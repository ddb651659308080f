package asterisk

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// socketInodes returns the inodes of the sockets process pid has open (Linux:
// its /proc/<pid>/fd links "socket:[inode]").
func socketInodes(pid int) map[string]bool {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	inodes := make(map[string]bool, len(fds))
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if rest, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(rest, "]")] = true
		}
	}
	return inodes
}

// boundInode returns the inode of the IPv4 socket bound to 127.0.0.1:port in
// /proc/net/<table> ("tcp": listening only; "udp"), or "" if there is none.
func boundInode(table string, port int) string {
	raw, err := os.ReadFile("/proc/net/" + table)
	if err != nil {
		return ""
	}
	local := fmt.Sprintf("0100007F:%04X", port) // 127.0.0.1 in host (little-endian) order
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != local {
			continue
		}
		if table == "tcp" && f[3] != "0A" { // TCP_LISTEN
			continue
		}
		if _, err := strconv.ParseUint(f[9], 10, 64); err == nil && f[9] != "0" {
			return f[9]
		}
	}
	return ""
}
