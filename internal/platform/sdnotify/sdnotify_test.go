package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestNotifyWithoutSystemdDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	sent, err := Notify(Ready)
	if sent || err != nil {
		t.Fatalf("Notify outside systemd = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifySendsTheState(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := filepath.Join(t.TempDir(), "notify")
		listen := name
		if abstract {
			name = "@presencebridge-test-" + filepath.Base(t.TempDir())
			listen = "\x00" + name[1:]
		}
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: listen, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", name)
		sent, err := Notify(Ready)
		if !sent || err != nil {
			t.Fatalf("Notify(%q) = %v, %v", name, sent, err)
		}
		buf := make([]byte, 64)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		conn.Close()
		if err != nil || string(buf[:n]) != Ready {
			t.Fatalf("abstract=%v: systemd got %q, %v; want %q", abstract, buf[:n], err, Ready)
		}
	}
}

func TestNotifyToAMissingSocketFails(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if sent, err := Notify(Ready); sent || err == nil {
		t.Fatalf("Notify to a missing socket = %v, %v; want an error", sent, err)
	}
}
