// Package sdnotify tells systemd how the service is doing (sd_notify(3)): the unit
// is Type=notify, so `systemctl start` returns only once presencebridge has read
// its configuration and opened its state file, and fails when it cannot.
package sdnotify

import (
	"net"
	"os"
)

// Messages understood by systemd.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to the socket systemd named in NOTIFY_SOCKET. Outside
// systemd (no NOTIFY_SOCKET) it does nothing and reports false.
func Notify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	if name[0] == '@' { // an abstract socket
		name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}
