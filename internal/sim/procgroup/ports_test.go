package procgroup

import (
	"fmt"
	"net"
	"testing"
)

// FreePorts gives distinct ports that a child can then listen on, TCP and UDP.
func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(3)
	if err != nil || len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("FreePorts(3) = %v, %v", ports, err)
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not free for TCP: %v", p, err)
		}
		l.Close()
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not free for UDP: %v", p, err)
		}
		u.Close()
	}
}
