package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/histogram"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
)

func cmdStatus(g globals, args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg := loadConfig(g)
	if cfg == nil {
		return exitConfig
	}
	ctx, stop := signalContext()
	defer stop()
	a, inUse, code := openApp(g, cfg, newConsoleLogger(g.stderr, "error"))
	var rep app.StatusReport
	switch {
	case code != exitOK:
		return code
	case inUse:
		c, err := control.NewClient(app.KeyFile(cfg))
		if err == nil {
			err = c.Status(ctx, &rep)
		}
		if err != nil {
			if errors.Is(err, control.ErrNotRunning) {
				err = fmt.Errorf("the state file %s is in use, but no service answers; stop the other presencebridge command and try again", cfg.StateFile)
			}
			fmt.Fprintf(g.stderr, "presencebridge status: %v\n", err)
			return exitFailure
		}
	default:
		defer a.Close()
		var found bool
		var err error
		rep, found, err = a.StoredStatus()
		if err != nil {
			fmt.Fprintf(g.stderr, "presencebridge status: %v\n", err)
			return exitFailure
		}
		if !found {
			rep = app.StatusReport{Version: version, Config: cfg.Path, TeamsEnabled: cfg.TeamsEnabled}
		}
	}
	if *asJSON {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(g.stdout, string(out))
		return exitOK
	}
	state := "not running"
	if rep.Running {
		state = "running since " + rep.Started.Local().Format(time.DateTime)
	} else if !rep.ReportedAt.IsZero() {
		state += " (last report " + rep.ReportedAt.Local().Format(time.DateTime) + ")"
	}
	fmt.Fprintf(g.stdout, "presencebridge %s, service %s\nconfig %s; Teams polling on: %v; users %d\n", rep.Version, state, rep.Config, rep.TeamsEnabled, rep.Users)
	for _, p := range rep.UserProblems {
		fmt.Fprintf(g.stdout, "  users file: %s\n", p)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nACCOUNT\tSIGN-IN\tUSERS\tRESOLVED\tUNKNOWN\tCYCLES\tINTERVAL\tLAST CYCLE\tBUDGET USED\t429s (1 h)\tLAST ERROR")
	for _, ac := range rep.Accounts {
		sign := string(ac.Sign.State)
		if ac.Sign.Username != "" {
			sign += " (" + ac.Sign.Username + ")"
		}
		last := "-"
		if !ac.Polling.LastCycleStart.IsZero() {
			last = ac.Polling.LastCycleStart.Local().Format(time.TimeOnly) + " in " + ac.Polling.LastCycleDuration.Round(time.Millisecond).String()
		}
		errText := ac.Polling.LastError
		if ac.Sign.LastError != "" {
			errText = ac.Sign.LastError
			if ac.Sign.Fix != "" {
				errText += "; fix: " + ac.Sign.Fix
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%.0f%%\t%s\t%s\n", ac.ID, sign, ac.Polling.Users, ac.Polling.Resolved,
			len(ac.Polling.Unknown), ac.Polling.Cycles, ac.Polling.CycleInterval, last, ac.Polling.BudgetShareUsed*100, fmt.Sprintf("%d (%d)", ac.Polling.Throttled, ac.Polling.ThrottledLastHour), errText)
		if sec := ac.Secret; sec != nil {
			switch {
			case sec.Error != "":
				fmt.Fprintf(tw, "\t  client secret expiry unknown: %s\n", sec.Error)
			case sec.DaysLeft < 0:
				fmt.Fprintf(tw, "\t  CLIENT SECRET EXPIRED %s: create a new one and put it in [Account.%s] ClientSecret\n", sec.Expires.Local().Format(time.DateOnly), ac.ID)
			case sec.Warning:
				fmt.Fprintf(tw, "\t  client secret expires %s, in %d days: create a new one and put it in [Account.%s] ClientSecret\n", sec.Expires.Local().Format(time.DateOnly), sec.DaysLeft, ac.ID)
			default:
				fmt.Fprintf(tw, "\t  client secret expires %s (in %d days)\n", sec.Expires.Local().Format(time.DateOnly), sec.DaysLeft)
			}
		}
		if line := resolvingLine(ac.Polling); line != "" {
			fmt.Fprintf(tw, "\t  %s\n", line)
		}
		if !ac.StaleSince.IsZero() {
			fmt.Fprintf(tw, "\t  users shown as stale on the PBX since %s ([Delivery] StaleAfter)\n", ac.StaleSince.Local().Format(time.DateTime))
		}
	}
	tw.Flush()
	// After the table, so that its columns stay aligned.
	for _, ac := range rep.Accounts {
		if line := readsLine(ac.PollRequests); line != "" {
			fmt.Fprintf(g.stdout, "Presence reads (account %s): %s\n", ac.ID, line)
		}
	}
	printPBXWatch(g, rep)
	if len(rep.Targets) == 0 {
		fmt.Fprintln(g.stdout, "\nNo delivery target: set [SIP] Server, [HTTP] URL or [Asterisk] URL (Mode = ami: Address) to send presence to the PBX.")
		return exitOK
	}
	tw = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tSTATE\tPENDING\tSENT\tFAILED\tDROPPED\tLAST OK\tLAST ERROR")
	for _, t := range rep.Targets {
		state, lastOK := "up", "-"
		switch {
		case t.Down:
			state = "down, retry " + t.BackoffUntil.Local().Format(time.TimeOnly)
		case t.Reasserting:
			state = fmt.Sprintf("up, re-asserting the users' states (%d so far)", t.Reasserted)
		}
		if !t.LastOK.IsZero() {
			lastOK = t.LastOK.Local().Format(time.TimeOnly)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", t.Name, state, t.Pending, t.Sent, t.Failed, t.Dropped, lastOK, t.LastError)
	}
	tw.Flush()
	for _, t := range rep.Targets {
		for _, line := range latencyLines(t) {
			fmt.Fprintf(g.stdout, "Latency (target %s): %s\n", t.Name, line)
		}
	}
	return exitOK
}

// readsLine sums up an account's presence reads: the quantiles of those Graph
// answered, and how many were throttled or failed ("" before the first).
func readsLine(rq poll.RequestsStatus) string {
	if rq.OK.Count+rq.Throttled.Count+rq.Error.Count == 0 {
		return ""
	}
	return fmt.Sprintf("p50 %.0f ms, p95 %.0f ms, p99 %.0f ms (%d ok, %d throttled, %d failed)",
		rq.OK.P50*1000, rq.OK.P95*1000, rq.OK.P99*1000, rq.OK.Count, rq.Throttled.Count, rq.Error.Count)
}

// latencyLines are a target's latency quantiles since start: from the Teams
// change, and from the PBX's own state where the PBX decides what is shown.
func latencyLines(t delivery.TargetStatus) []string {
	var out []string
	for _, l := range []struct {
		what string
		h    histogram.Snapshot
	}{{"Teams change to accepted", t.ChangeLatency}, {"PBX state to accepted", t.PBXLatency}} {
		if l.h.Count > 0 {
			out = append(out, fmt.Sprintf("%s: p50 %.2f s, p95 %.2f s, p99 %.2f s over %d", l.what, l.h.P50, l.h.P95, l.h.P99, l.h.Count))
		}
	}
	return out
}

// printPBXWatch shows the PBX watch's subscriptions and each account's writes
// to Teams, where [PBX] Watch is on.
func printPBXWatch(g globals, rep app.StatusReport) {
	w := rep.PBXWatch
	if w == nil {
		return
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPBX WATCH\tUSERS\tSUBSCRIBED\tFAILED\tIN A CALL\tNOTIFYS\tUNREADABLE")
	fmt.Fprintf(tw, "calls\t%d\t%d\t%d\t%d\t%d\t%d\n", w.Users, w.Subscribed, w.Failed, w.InCall, w.Counts.Notifies, w.Counts.Ignored)
	for _, p := range w.Problems {
		fmt.Fprintf(tw, "\t  %s (%s): %s\n", p.SIPURI, p.UPN, p.Error)
	}
	if w.Failed > len(w.Problems) {
		fmt.Fprintf(tw, "\t  and %d more\n", w.Failed-len(w.Problems))
	}
	tw.Flush()
	for _, ac := range rep.Accounts {
		wr := ac.Writes
		if wr == nil {
			continue
		}
		fmt.Fprintf(g.stdout, "Teams writes (account %s): %d calls shown now; set %d, renewed %d, cleared %d, failed %d, throttled %d",
			ac.ID, wr.Held, wr.Counts.Set, wr.Counts.Renewed, wr.Counts.Cleared, wr.Counts.Failed, wr.Counts.Throttled)
		if wr.Latency.Samples > 0 {
			fmt.Fprintf(g.stdout, "; PBX to Teams p50 %.0f ms, p95 %.0f ms", wr.Latency.P50Ms, wr.Latency.P95Ms)
		}
		fmt.Fprintln(g.stdout)
		if wr.LastError != "" {
			fmt.Fprintf(g.stdout, "  last error: %s\n", wr.LastError)
		}
	}
}

// resolvingLine says how far resolving users to object ids is, while it is
// under way ("" otherwise).
func resolvingLine(p poll.Status) string {
	if !p.Resolving {
		return ""
	}
	return fmt.Sprintf("resolving users: resolved %s of %s (each is polled as soon as it is found)", thousands(p.Resolved), thousands(p.Users))
}

// thousands writes n with commas between groups of three digits: 31,200.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
