package procgroup

import (
	"errors"
	"fmt"
	"log/slog"
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

// A launch that finds its port taken is run again, three times in all; any
// other error ends it at once.
func TestRetryPortTaken(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	calls := 0
	_, err := RetryPortTaken(log, "test", func() (int, error) { calls++; return 0, fmt.Errorf("bind: %w", ErrPortTaken) })
	if calls != 3 || !errors.Is(err, ErrPortTaken) {
		t.Errorf("always taken: %d calls, %v", calls, err)
	}
	calls = 0
	got, err := RetryPortTaken(log, "test", func() (int, error) {
		calls++
		if calls == 1 {
			return 0, ErrPortTaken
		}
		return 7, nil
	})
	if got != 7 || err != nil || calls != 2 {
		t.Errorf("taken once: %d, %v after %d calls", got, err, calls)
	}
	calls = 0
	if _, err := RetryPortTaken(log, "test", func() (int, error) { calls++; return 0, errors.New("no binary") }); err == nil || calls != 1 {
		t.Errorf("another error: %v after %d calls", err, calls)
	}
}
