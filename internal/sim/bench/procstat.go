package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Figures of other processes (Kamailio's), read from Linux's /proc; elsewhere
// they are missing and the bench prints n/a.

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture the product is built for).
const userHZ = 100

// processesWith lists the processes whose command line holds s (e.g. the path
// of a Kamailio's configuration file, unique to one run: its main process and
// the workers it forked).
func processesWith(s string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(raw), s) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuTimes is the CPU time (user + system) each process has used so far.
func cpuTimes(pids []int) map[int]time.Duration {
	out := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: count fields after it.
		i := strings.LastIndexByte(string(raw), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(raw[i+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14, utime
		st, _ := strconv.ParseInt(f[12], 10, 64) // field 15, stime
		out[pid] = time.Duration(ut+st) * time.Second / userHZ
	}
	return out
}

// cpuShare describes the CPU the processes used between two cpuTimes over
// wall: the busiest process and all of them, in % of one core.
func cpuShare(before, after map[int]time.Duration, wall time.Duration) string {
	if len(after) == 0 || wall <= 0 {
		return "n/a"
	}
	var total, busiest time.Duration
	for pid, t := range after {
		d := t - before[pid]
		total += d
		busiest = max(busiest, d)
	}
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / wall.Seconds() }
	return fmt.Sprintf("busiest process %.0f%%, all %d processes %.0f%% of one core", pct(busiest), len(after), pct(total))
}

// udpDrops is how many datagrams the kernel dropped on the IPv4 UDP sockets
// bound to port (a full receive buffer: the reader did not keep up), and false
// when /proc/net/udp cannot tell.
func udpDrops(port int) (int, bool) {
	_, drops, ok := udpSocket(port)
	return drops, ok
}

// udpSocket reads the IPv4 UDP sockets bound to port from /proc/net/udp: the
// bytes waiting in their receive queues and the datagrams the kernel dropped.
// It is read every 20 ms in a burst, so it only looks at the lines it needs.
func udpSocket(port int) (queued, drops int, ok bool) {
	raw, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, 0, false
	}
	// sl local_address rem_address st tx_queue:rx_queue ... drops
	want := []byte(fmt.Sprintf(":%04X ", port))
	for rest := raw; ; {
		i := bytes.Index(rest, want)
		if i < 0 {
			break
		}
		end := bytes.IndexByte(rest[i:], '\n')
		if end < 0 {
			end = len(rest) - i
		}
		start := bytes.LastIndexByte(rest[:i], '\n') + 1
		line := string(rest[start : i+end])
		rest = rest[i+end:]
		f := strings.Fields(line)
		if len(f) < 13 || !strings.HasSuffix(f[1], string(want[:len(want)-1])) {
			continue // the port of a remote address
		}
		n, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		q, _ := strconv.ParseInt(rx, 16, 64)
		queued += int(q)
		drops += n
		ok = true
	}
	return queued, drops, ok
}

// queueWatch samples a UDP port's receive queue until stopped: how far its
// reader fell behind at worst.
type queueWatch struct {
	port     int
	drops0   int
	ok       bool
	mu       sync.Mutex
	maxQueue int
	stop     chan struct{}
	done     chan struct{}
}

// watchQueue starts sampling port's receive queue every 20 ms.
func watchQueue(port int) *queueWatch {
	q := &queueWatch{port: port, stop: make(chan struct{}), done: make(chan struct{})}
	_, q.drops0, q.ok = udpSocket(port)
	go func() {
		defer close(q.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-q.stop:
				return
			case <-t.C:
			}
			if n, _, ok := udpSocket(port); ok {
				q.mu.Lock()
				q.maxQueue = max(q.maxQueue, n)
				q.mu.Unlock()
			}
		}
	}()
	return q
}

// end stops sampling and describes what the port's reader went through.
func (q *queueWatch) end() string {
	close(q.stop)
	<-q.done
	_, drops, ok := udpSocket(q.port)
	if !ok || !q.ok {
		return ""
	}
	return fmt.Sprintf("; its UDP receive queue at most %d KiB (sampled every 20 ms), %d datagrams dropped by the kernel (queue full)",
		q.maxQueue/1024, drops-q.drops0)
}

// udpDropsOf is how many datagrams the kernel dropped on the UDP sockets
// (IPv4 and IPv6) that process pid ("self" or a number) holds, and false
// when /proc cannot tell.
func udpDropsOf(pid string) (int, bool) {
	fds, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return 0, false
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/" + pid + "/fd/" + fd.Name())
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	total, found := 0, false
	for _, table := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		raw, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		found = true
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
			f := strings.Fields(line)
			if len(f) < 13 || !inodes[f[9]] {
				continue
			}
			n, _ := strconv.Atoi(f[len(f)-1])
			total += n
		}
	}
	return total, found
}
