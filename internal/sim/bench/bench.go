// Package bench is the `presencebridge bench` command: it polls a simulated tenant
// of many users (the simulate command, run as a child process of the same
// executable so its CPU and memory are not counted) and prints the figures of the
// steady-state cycles; `bench delivery` measures how fast a burst of changes is
// accepted by each kind of target; `bench latency` the time from a Teams change
// to its arrival at each target, the cold start and a warm restart. Figures are
// printed, never judged: machines are noisy.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
)

// nullSink counts the changes the pollers pass on, in place of delivery.
type nullSink struct{ n int }

func (s *nullSink) Deliver(_ context.Context, cs []presence.Change) error { s.n += len(cs); return nil }

// Command is the name of the command args (what follows "bench") run: "bench",
// "bench delivery", "bench calls" or "bench latency", for the caller's
// "presencebridge <command>: <error>".
func Command(args []string) string {
	if len(args) > 0 && (args[0] == "delivery" || args[0] == "calls" || args[0] == "latency") {
		return "bench " + args[0]
	}
	return "bench"
}

// Main runs `presencebridge bench` with args (what follows "bench"): it polls a
// simulated tenant, run as a child process (`simulate`, by os.Executable, which
// must be presencebridge) so its CPU and memory are not counted, and prints the
// figures of the steady-state cycles on stdout. `bench delivery ...` runs
// Delivery, `bench calls ...` Calls, `bench latency ...` Latency. Bad
// arguments return a *simulate.UsageError, already printed.
func Main(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "delivery" {
		return Delivery(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "calls" {
		return Calls(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "latency" {
		return Latency(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nUsers := fs.Int("users", 50000, "simulated users in one account")
	cycles := fs.Int("cycles", 5, "steady-state cycles to measure")
	rate := fs.Float64("rate", 6, "presence changes per user per hour in the simulated tenant")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file at the end")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured cycles to this file")
	budgetRequests := fs.Int("budget-requests", 1500, "[Polling] BudgetRequests: Graph requests allowed per 30 s (the tenant throttles at the same figure)")
	interval := fs.Duration("interval", 0, "[Polling] Interval (0: auto, the product's default)")
	deliver := fs.String("deliver", "", "also deliver every change: http (to the simulated tenant's CTI receiver, in its process); empty: changes are counted only")
	if err := fs.Parse(args); err != nil {
		return &simulate.UsageError{Err: err, Printed: true}
	}
	dir, err := os.MkdirTemp("", "presencebridge-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	simArgs := []string{"--addr", "127.0.0.1:0", "--users", strconv.Itoa(*nUsers), "--rate", fmt.Sprint(*rate),
		"--auth", "secret", "--interval", interval.String(), "--resolve-rate", "100", "--write-config", dir,
		"--throttle-limit", strconv.Itoa(*budgetRequests)}
	switch *deliver {
	case "":
	case "http":
		simArgs = append(simArgs, "--pbx", "127.0.0.1:0")
	default:
		return fmt.Errorf("--deliver %q: use http, or leave it out", *deliver)
	}
	sim, err := startTenant(simArgs)
	if err != nil {
		return err
	}
	defer sim.stop()
	cfg, err := config.Load(filepath.Join(dir, "Presence.ini"))
	if err != nil {
		return err
	}
	for i := range cfg.Accounts {
		cfg.Accounts[i].BudgetRequests = *budgetRequests
	}
	sink := &nullSink{}
	// The app's version shows only in its status and logs, which bench does not print.
	opts := app.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Sink: sink, Version: "bench"}
	if *deliver != "" {
		opts.Sink = nil // the composer and the [HTTP] target the written config names
	}
	a, err := app.Open(opts)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	status := func() poll.Status { return a.Status(ctx).(app.StatusReport).Accounts[0].Polling }
	t0 := time.Now()
	// Every user resolved, then a whole cycle begun after that.
	for s := status(); s.Resolving || s.Resolved < *nUsers; s = status() {
		time.Sleep(20 * time.Millisecond)
	}
	for c := status().Cycles; status().Cycles < c+2; {
		time.Sleep(20 * time.Millisecond)
	}
	if *deliver != "" {
		for a.Status(ctx).(app.StatusReport).Targets[0].Sent < *nUsers { // every user's first state (changes keep coming)
			time.Sleep(20 * time.Millisecond)
		}
	}
	resolveTime := time.Since(t0)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ru0 := rusage()
	first := status().Cycles
	m0 := time.Now()
	var durs []time.Duration
	last := first
	for last < first+*cycles {
		time.Sleep(10 * time.Millisecond)
		if s := status(); s.Cycles != last {
			last = s.Cycles
			durs = append(durs, s.LastCycleDuration)
		}
	}
	wall := time.Since(m0)
	cpu := rusage() - ru0
	st := status()
	simStats, dirStats := fetchSimStats(sim.Ready)
	var maxDur, sum time.Duration
	for _, d := range durs {
		sum += d
		maxDur = max(maxDur, d)
	}
	fmt.Fprintf(stdout, "presencebridge bench: %d users, 1 account, budget %d requests/30s, share %.0f%%\n", *nUsers, *budgetRequests, cfg.Accounts[0].BudgetShare*100)
	fmt.Fprintf(stdout, "  first sight (resolve %d UPNs + a whole cycle%s): %s\n", *nUsers, map[bool]string{true: " + first delivery", false: ""}[*deliver != ""], resolveTime.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  requests per cycle:        %d\n", st.RequestsPerCycle)
	fmt.Fprintf(stdout, "  cycle interval (effective): %s\n", st.CycleInterval)
	fmt.Fprintf(stdout, "  cycle time, mean / max:    %s / %s over %d cycles\n", (sum / time.Duration(len(durs))).Round(time.Millisecond), maxDur.Round(time.Millisecond), len(durs))
	fmt.Fprintf(stdout, "  budget share used:         %.1f%% (%d requests in the last 30 s)\n", st.BudgetShareUsed*100, st.RequestsInWindow)
	fmt.Fprintf(stdout, "  max requests in any 30 s window at the tenant: %s\n", simStats)
	fmt.Fprintf(stdout, "  directory reads at the tenant (lookups): %s\n", dirStats)
	fmt.Fprintf(stdout, "  429s seen:                 %d\n", st.Throttled)
	if *deliver != "" {
		tg := a.Status(ctx).(app.StatusReport).Targets[0]
		fmt.Fprintf(stdout, "  delivered to the CTI:      %d states, %d pending\n", tg.Sent, tg.Pending)
	} else {
		fmt.Fprintf(stdout, "  changes passed on:         %d\n", sink.n)
	}
	fmt.Fprintf(stdout, "  CPU during measured cycles: %s for %s wall (%.1f%% of one core)\n", cpu.Round(time.Millisecond), wall.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds())
	fmt.Fprintf(stdout, "  peak RSS:                  %s\n", peakRSS())
	fmt.Fprintf(stdout, "  Go heap in use:            %.1f MiB\n", heapMiB())
	if fi, err := os.Stat(cfg.StateFile); err == nil {
		fmt.Fprintf(stdout, "  state file:                %.1f MiB\n", float64(fi.Size())/(1<<20))
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
	}
	return nil
}

// tenant is the simulated tenant startTenant runs.
type tenant struct {
	simulate.Ready
	pid  int
	stop func()
}

// startTenant runs `simulate` with args as a child process of this executable
// (which must be presencebridge, or a test binary that answers "simulate" as
// it does), so the tenant's CPU and memory are not counted in the figures, and
// returns once it is ready.
func startTenant(args []string) (*tenant, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sim := exec.Command(self, append([]string{"simulate"}, args...)...)
	out, _ := sim.StdoutPipe()
	sim.Stderr = io.Discard
	// It ends with this process, even one killed (by SIGPIPE, when stdout
	// was piped into head).
	sim.SysProcAttr = procgroup.Attr(syscall.SIGTERM)
	if err := sim.Start(); err != nil {
		return nil, err
	}
	t := &tenant{pid: sim.Process.Pid, stop: func() { sim.Process.Signal(os.Interrupt); sim.Wait() }}
	br := bufio.NewReader(out)
	line, err := br.ReadString('\n')
	if err != nil {
		t.stop()
		return nil, fmt.Errorf("simulated tenant did not start: %w", err)
	}
	go io.Copy(io.Discard, br) // the CTI receiver prints what arrives
	if err := json.Unmarshal([]byte(line), &t.Ready); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

// peakRSS reports this process's peak resident set and, now, how much of the
// resident set is anonymous memory (Go heap, stacks) and how much is mapped
// files (the bbolt file).
func peakRSS() string { return peakRSSOf("self") }

// peakRSSOf is peakRSS of process pid ("self" or a number), from /proc.
func peakRSSOf(pid string) string {
	raw, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return "n/a"
	}
	mib := map[string]float64{}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			kb, _ := strconv.Atoi(f[1])
			mib[strings.TrimSuffix(f[0], ":")] = float64(kb) / 1024
		}
	}
	if _, ok := mib["VmHWM"]; !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB (now: %.1f MiB anonymous, %.1f MiB mapped files)", mib["VmHWM"], mib["RssAnon"], mib["RssFile"])
}

func heapMiB() float64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// fetchSimStats asks the simulated tenant's control API for the most presence
// requests it saw in one throttle window and how often it throttled, and the
// same of its directory throttle (the UPN lookups).
func fetchSimStats(r simulate.Ready) (presence, directory string) {
	api, err := newTenantAPI(r)
	if err != nil {
		return "n/a", "n/a"
	}
	st, err := api.stats(false)
	if err != nil {
		return "n/a", "n/a"
	}
	return fmt.Sprintf("%v (throttled at the tenant: %d)", st.MaxInWindow, st.Throttled),
		fmt.Sprintf("max %v resource units in any 10 s window (throttled at the tenant: %d)", st.MaxDirectoryRU, st.DirectoryThrottled)
}
