package procgroup

import (
	"errors"
	"fmt"
	"io"
	"net"
)

// FreePorts finds n distinct loopback ports free for both UDP and TCP, for a
// harness's child to listen on. They are free when FreePorts returns, not
// reserved: a harness retries on fresh ports when its child finds one taken.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var holds []io.Closer
	defer func() {
		for _, h := range holds {
			h.Close()
		}
	}()
	for tries := 0; len(ports) < n && tries < 100; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			l.Close()
			continue
		}
		holds = append(holds, l, u)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, errors.New("no free loopback ports")
	}
	return ports, nil
}
