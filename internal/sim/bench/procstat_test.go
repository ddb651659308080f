package bench

import (
	"net"
	"os"
	"testing"
)

// A socket nobody reads fills up: /proc shows its queue, and the datagrams the
// kernel then drops, by port and by the process that holds it.
func TestUDPQueueAndDrops(t *testing.T) {
	if _, err := os.Stat("/proc/net/udp"); err != nil {
		t.Skip("no /proc/net/udp (not Linux)")
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	port := rx.LocalAddr().(*net.UDPAddr).Port
	before, ok := udpDropsOf("self")
	if !ok {
		t.Fatal("udpDropsOf(self): no figure")
	}
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for range 200 {
		tx.Write(make([]byte, 500))
	}
	queued, drops, ok := udpSocket(port)
	if !ok || queued == 0 || drops == 0 {
		t.Errorf("udpSocket(%d) = %d bytes queued, %d dropped, %v; want both above 0", port, queued, drops, ok)
	}
	after, _ := udpDropsOf("self")
	if after-before != drops {
		t.Errorf("udpDropsOf(self) grew by %d, want the socket's %d", after-before, drops)
	}
}
