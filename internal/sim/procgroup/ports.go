package procgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// ErrPortTaken is what a harness's launch wraps when its child could not bind a
// port FreePorts gave: another process took it in between.
var ErrPortTaken = errors.New("a listen port was taken")

// RetryPortTaken runs launch, and again (on the fresh ports launch picks) while
// it fails with ErrPortTaken, three times in all; each retry is logged as
// name's.
func RetryPortTaken[T any](log *slog.Logger, name string, launch func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		s, err := launch()
		if err == nil || attempt == 3 || !errors.Is(err, ErrPortTaken) {
			return s, err
		}
		log.Warn(name+" port taken, retrying on other ports", "attempt", attempt)
	}
}
