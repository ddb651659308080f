package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// dashboardPath is the Grafana dashboard the DEB and the MSI install.
const dashboardPath = "../../packaging/grafana/presencebridge-dashboard.json"

type grafanaDashboard struct {
	Inputs []struct {
		Name, Type, PluginID string
	} `json:"__inputs"`
	SchemaVersion int            `json:"schemaVersion"`
	UID           string         `json:"uid"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
			Datasource *grafanaDatasource
		}
	}
}

type grafanaDatasource struct{ Type, UID string }

type grafanaPanel struct {
	ID         int
	Type       string
	Title      string
	Datasource *grafanaDatasource
	GridPos    struct{ X, Y, W, H int }
	Targets    []struct {
		RefID      string `json:"refId"`
		Expr       string
		Datasource *grafanaDatasource
	}
	Panels []grafanaPanel // a collapsed row's
}

func readDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	if dec.More() {
		t.Fatalf("%s has more after the dashboard object", dashboardPath)
	}
	return d
}

// allPanels flattens rows.
func (d grafanaDashboard) allPanels() []grafanaPanel {
	var out []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// expressions lists every PromQL expression of the dashboard with where it is:
// the panels' queries and the template variables' label_values queries.
func (d grafanaDashboard) expressions(t *testing.T) (where, exprs []string) {
	t.Helper()
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			where = append(where, fmt.Sprintf("panel %q (id %d) query %s", p.Title, p.ID, tg.RefID))
			exprs = append(exprs, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q.Query)
		}
		where = append(where, fmt.Sprintf("variable %q", v.Name))
		exprs = append(exprs, m[1])
	}
	return where, exprs
}

var (
	promStrings   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers  = regexp.MustCompile(`\{[^{}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promVariables = regexp.MustCompile(`\$\{?\w+\}?`)
	promTokens    = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords  = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "Inf", "NaN", "inf", "nan"}
)

// promqlMetrics returns the metric names an expression selects: what is left
// of it without strings, label matchers, ranges, groupings, Grafana variables,
// numbers, keywords and function or aggregation names (a name followed by "(").
func promqlMetrics(expr string) []string {
	s := promStrings.ReplaceAllString(expr, " ")
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	s = promVariables.ReplaceAllString(s, " ")
	var out []string
	for _, m := range promTokens.FindAllStringSubmatch(s, -1) {
		tok := m[0]
		if m[1] != "" || tok[0] >= '0' && tok[0] <= '9' || slices.Contains(promKeywords, tok) {
			continue
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out
}

// exportedMetrics are the metric names a /metrics page (the Prometheus text
// format) lets a query select: every family its # TYPE lines declare, and a
// histogram's or summary's _bucket, _sum and _count series.
func exportedMetrics(page string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(page, "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		names[f[2]] = true
		switch f[3] {
		case "histogram":
			names[f[2]+"_bucket"], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
		case "summary":
			names[f[2]+"_sum"], names[f[2]+"_count"] = true, true
		}
	}
	return names
}

// unexported lists, for each expression, the metric names it uses that
// exported lacks, and the expressions that select no metric at all (a query
// this check would otherwise let through unread).
func unexported(where, exprs []string, exported map[string]bool) []string {
	var problems []string
	for i, e := range exprs {
		names := promqlMetrics(e)
		if len(names) == 0 {
			problems = append(problems, fmt.Sprintf("%s selects no metric: %s", where[i], e))
		}
		for _, n := range names {
			if !exported[n] {
				problems = append(problems, fmt.Sprintf("%s uses %s, which presencebridge does not export: %s", where[i], n, e))
			}
		}
	}
	return problems
}

func TestPromQLMetrics(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`presencebridge_users{account=~"$account"}`, []string{"presencebridge_users"}},
		{`histogram_quantile(0.95, sum by (target, le) (rate(presencebridge_delivery_latency_seconds_bucket{target=~"$target"}[$__rate_interval])))`,
			[]string{"presencebridge_delivery_latency_seconds_bucket"}},
		{`time() - presencebridge_poll_last_good_cycle_timestamp_seconds{instance=~"$instance",account=~"$account"}`,
			[]string{"presencebridge_poll_last_good_cycle_timestamp_seconds"}},
		{`sum(rate(a_total{x="y{z}"}[5m])) by (target) / on (target) group_left() b > bool 1e3 offset 5m`, []string{"a_total", "b"}},
		{`60 * rate(presencebrige_graph_throttled_total[1m])`, []string{"presencebrige_graph_throttled_total"}},
		{`vector(1)`, nil},
	} {
		if got := promqlMetrics(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetrics(%q) = %q; want %q", tc.expr, got, tc.want)
		}
	}
	exported := exportedMetrics("# HELP presencebridge_delivery_latency_seconds x\n# TYPE presencebridge_delivery_latency_seconds histogram\n" +
		"# TYPE presencebridge_graph_throttled_total counter\n")
	// A misspelt name and an expression without a metric are both reported,
	// naming the panel and the name.
	problems := unexported([]string{`panel "429s" (id 4) query A`, `panel "x" (id 5) query A`, `panel "ok" (id 6) query B`},
		[]string{`rate(presencebrige_graph_throttled_total[5m])`, `vector(1)`, `rate(presencebridge_delivery_latency_seconds_count[5m])`}, exported)
	if len(problems) != 2 || !strings.Contains(problems[0], `panel "429s" (id 4) query A uses presencebrige_graph_throttled_total`) ||
		!strings.Contains(problems[1], "selects no metric") {
		t.Errorf("problems = %q", problems)
	}
}

// The dashboard imports anywhere: valid JSON, Grafana 10's schema, every query
// on the ${DS_PROMETHEUS} input, panels with unique ids inside the 24-column
// grid and not overlapping.
func TestDashboardImports(t *testing.T) {
	d := readDashboard(t)
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v; want one Prometheus datasource input DS_PROMETHEUS", d.Inputs)
	}
	if d.SchemaVersion < 38 || d.UID == "" {
		t.Errorf("schemaVersion %d, uid %q; want Grafana 10's schema (38 or later) and a uid", d.SchemaVersion, d.UID)
	}
	ds := func(what string, s *grafanaDatasource) {
		if s == nil || s.Type != "prometheus" || s.UID != "${DS_PROMETHEUS}" {
			t.Errorf("%s: datasource %+v; want prometheus ${DS_PROMETHEUS}", what, s)
		}
	}
	ids := map[int]string{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	queries := 0
	for _, p := range d.allPanels() {
		what := fmt.Sprintf("panel %q (id %d)", p.Title, p.ID)
		if other, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("%s: id taken by %q", what, other)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", what, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("%s overlaps %s at column %d, row %d", what, other, x, y)
				}
				taken[cell{x, y}] = what
			}
		}
		if p.Type == "row" {
			continue
		}
		ds(what, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("%s has no query", what)
		}
		for _, tg := range p.Targets {
			ds(what+" query "+tg.RefID, tg.Datasource)
			queries++
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			ds("variable "+v.Name, v.Datasource)
		}
	}
	if queries < 20 {
		t.Errorf("%d queries; the dashboard lost its panels", queries)
	}
}

// Every metric the dashboard's queries name is one a running presencebridge
// exports: scraped from its /metrics after a poll cycle, a delivered change
// and a call on the PBX shown in Teams, with the PBX watched (Kamailio as the
// PBX) and the client secret's expiry readable, so every family the dashboard
// may show has its series.
func TestIntegrationDashboardMetricsExported(t *testing.T) {
	d := readDashboard(t)
	where, exprs := d.expressions(t)

	pbx := pbxtest.Kamailio(t, kamailio.Options{PBX: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim := testkit.StartSim(t, graphsim.Options{Users: 3})
	if err := sim.SetAppRole("presencebridge-daemon", "Application.Read.All", true); err != nil {
		t.Fatal(err)
	}
	us := sim.Users()
	for _, u := range us {
		if _, err := sim.SetPresence(u.UPN, "Available", "Available"); err != nil {
			t.Fatal(err)
		}
	}
	crm := newRecordingCTI(t)
	path := testkit.WriteSimConfig(t, sim, testkit.SimConfig{Interval: time.Second, ResolveRate: 100,
		Extra: httpSection(crm.srv.URL) + fmt.Sprintf("[SIP]\nServer = %s\n[PBX]\nWatch = dialog\n", pbx.UDP)})
	r := startWith(t, path, func(cfg *config.Config) {
		cfg.MetricsAddr = "127.0.0.1:0"
		cfg.WinningTechnology = config.WinningSipSimple
	})
	waitFor(t, "every user watched and shown on the CTI", func() bool {
		st := r.app.report()
		last, _ := crm.last("")
		return st.PBXWatch != nil && st.PBXWatch.Subscribed == 3 && len(last) == 3 && r.app.MetricsAddr() != ""
	}, r)
	carl := us[2].UPN
	if _, err := sim.SetPresence(carl, "Busy", "InAMeeting"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "carl's change delivered", func() bool {
		last, _ := crm.last("")
		return last[carl].Teams.Activity == "InAMeeting"
	}, r)
	ph := pbxtest.Phones(t, pbx.UDP, pbx.Domain, nil, "1000", "1001")
	call, err := ph["1000"].Call(ctx, "sip:1001@"+pbx.Domain)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the call shown in Teams, and the secret's expiry read", func() bool {
		ac := r.account(t, "main")
		return ac.Writes != nil && ac.Writes.Latency.Samples > 0 && ac.Secret != nil && !ac.Secret.Expires.IsZero()
	}, r)
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get("http://" + r.app.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := exportedMetrics(string(page))
	if !exported["presencebridge_delivery_latency_seconds_bucket"] || !exported["presencebridge_poll_request_seconds_count"] {
		t.Fatalf("/metrics lacks the latency histograms:\n%s", page)
	}
	for _, p := range unexported(where, exprs, exported) {
		t.Error(p)
	}
}
