package packaging

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// upgradeCode is the product's identity across versions (packaging/msi/presencebridge.wxs).
const upgradeCode = "{6B1C9D3E-2F47-4A8B-9E51-7D0C3A2B4F68}"

func buildMSI(t *testing.T, version string) string {
	t.Helper()
	require(t, "wixl", "msibuild", "msiinfo", "msiextract")
	return buildMSIFrom(t, binary(t, "windows"), version)
}

// buildMSIFrom builds the MSI of version around the Windows exe.
func buildMSIFrom(t *testing.T, exe, version string) string {
	t.Helper()
	out := strings.TrimSpace(run(t, "../scripts/build-msi.sh", exe, version, t.TempDir()))
	return out[strings.LastIndex(out, "\n")+1:]
}

// table is `msiinfo export` of one table: a row per line (after the three header
// lines), columns by name.
func table(t *testing.T, msi, name string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(run(t, "msiinfo", "export", msi, name), "\r\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("table %s: %q", name, lines)
	}
	cols := strings.Split(strings.TrimRight(lines[0], "\r"), "\t")
	var rows []map[string]string
	for _, l := range lines[3:] {
		cells := strings.Split(strings.TrimRight(l, "\r"), "\t")
		row := map[string]string{}
		for i, c := range cols {
			if i < len(cells) {
				row[c] = cells[i]
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// properties is the Property table as a map.
func properties(t *testing.T, msi string) map[string]string {
	t.Helper()
	props := map[string]string{}
	for _, r := range table(t, msi, "Property") {
		props[r["Property"]] = r["Value"]
	}
	return props
}

func find(rows []map[string]string, col, value string) map[string]string {
	for _, r := range rows {
		if r[col] == value {
			return r
		}
	}
	return nil
}

func TestMSI(t *testing.T) {
	msi := buildMSI(t, "1.0.5")
	props := properties(t, msi)
	for k, want := range map[string]string{"ProductName": "presencebridge", "ProductVersion": "1.0.5", "UpgradeCode": upgradeCode,
		"ALLUSERS": "1", "MsiHiddenProperties": "CLIENTSECRET"} {
		if props[k] != want {
			t.Errorf("Property %s = %q; want %q", k, props[k], want)
		}
	}
	for _, p := range []string{"TENANTID", "CLIENTID", "AUTH", "USERNAME", "CLIENTSECRET"} {
		if !strings.Contains(";"+props["SecureCustomProperties"]+";", ";"+p+";") {
			t.Errorf("%s is not in SecureCustomProperties %q", p, props["SecureCustomProperties"])
		}
	}
	if sum := run(t, "msiinfo", "suminfo", msi); !strings.Contains(sum, "Template: x64;1033") {
		t.Errorf("summary information is not x64:\n%s", sum)
	}

	// The service: automatic, own process, LocalSystem, the config path and the
	// --service marker in its arguments; stopped on upgrade and uninstall, removed
	// on uninstall, not started.
	svc := find(table(t, msi, "ServiceInstall"), "Name", "presencebridge")
	if svc == nil || svc["StartType"] != "2" || svc["ServiceType"] != "16" || svc["StartName"] != "LocalSystem" ||
		svc["Arguments"] != `--config "[CommonAppDataFolder]presencebridge\Presence.ini" run --service` || svc["Component_"] != "Binary" {
		t.Errorf("ServiceInstall row: %v", svc)
	}
	ctl := find(table(t, msi, "ServiceControl"), "Name", "presencebridge")
	// 2 stop at install + 32 stop at uninstall + 128 delete at uninstall; no start (1, 16).
	if ctl == nil || ctl["Event"] != "162" || ctl["Wait"] != "1" {
		t.Errorf("ServiceControl row: %v", ctl)
	}

	dirs := table(t, msi, "Directory")
	if d := find(dirs, "Directory", "INSTALLDIR"); d == nil || d["Directory_Parent"] != "ProgramFiles64Folder" || d["DefaultDir"] != "presencebridge" {
		t.Errorf("INSTALLDIR: %v", d)
	}
	if d := find(dirs, "Directory", "DATADIR"); d == nil || d["Directory_Parent"] != "CommonAppDataFolder" || d["DefaultDir"] != "presencebridge" {
		t.Errorf("DATADIR: %v", d)
	}
	comps := table(t, msi, "Component")
	for _, c := range []string{"Config", "Users"} {
		// 256 (64-bit) + 16 (Permanent) + 128 (NeverOverwrite).
		if r := find(comps, "Component", c); r == nil || r["Attributes"] != "400" || r["Directory_"] != "DATADIR" {
			t.Errorf("component %s: %v; want Attributes 400 in DATADIR", c, r)
		}
	}
	if r := find(comps, "Component", "Binary"); r == nil || r["Directory_"] != "INSTALLDIR" || r["KeyPath"] != "presencebridge.exe" {
		t.Errorf("component Binary: %v", r)
	}

	// Major upgrades of older versions; a newer one installed refuses this one.
	up := table(t, msi, "Upgrade")
	if r := find(up, "ActionProperty", "WIX_UPGRADE_DETECTED"); r == nil || r["UpgradeCode"] != upgradeCode || r["VersionMax"] != "1.0.5" {
		t.Errorf("major-upgrade row: %v", r)
	}
	if r := find(up, "ActionProperty", "WIX_DOWNGRADE_DETECTED"); r == nil || r["UpgradeCode"] != upgradeCode || r["VersionMin"] != "1.0.5" || r["Attributes"] != "2" {
		t.Errorf("downgrade-detection row: %v", r)
	}
	if r := find(table(t, msi, "LaunchCondition"), "Condition", "NOT WIX_DOWNGRADE_DETECTED"); r == nil || !strings.Contains(r["Description"], "newer presencebridge") {
		t.Errorf("downgrade launch condition: %v", r)
	}

	reg := table(t, msi, "Registry")
	for name, value := range map[string]string{"EventMessageFile": `%SystemRoot%\System32\EventCreate.exe`, "TypesSupported": "#7"} {
		r := find(reg, "Name", name)
		if r == nil || r["Value"] != value || r["Root"] != "2" || !strings.HasPrefix(r["Key"], `SYSTEM\CurrentControlSet\Services\EventLog\Application\presencebridge`) {
			t.Errorf("Event Log source value %s: %v", name, r)
		}
	}

	// The silent-install properties go into Presence.ini on a first install only.
	ca := find(table(t, msi, "CustomAction"), "Action", "WriteSilentProperties")
	if ca == nil || ca["Type"] != "11282" || ca["Source"] != "presencebridge.exe" ||
		!strings.HasPrefix(ca["Target"], `--config "[CommonAppDataFolder]presencebridge\Presence.ini" config set --if-set `) ||
		!strings.Contains(ca["Target"], `"Account.main.TenantID=[TENANTID]"`) || !strings.Contains(ca["Target"], `"Account.main.ClientSecret=[CLIENTSECRET]"`) {
		t.Errorf("custom action: %v", ca)
	}
	seq := table(t, msi, "InstallExecuteSequence")
	at := func(action string) int {
		r := find(seq, "Action", action)
		if r == nil {
			t.Fatalf("no %s in InstallExecuteSequence", action)
		}
		n, err := strconv.Atoi(r["Sequence"])
		if err != nil {
			t.Fatalf("%s: sequence %q", action, r["Sequence"])
		}
		return n
	}
	if s := at("WriteSilentProperties"); s <= at("InstallFiles") || s >= at("InstallFinalize") {
		t.Errorf("WriteSilentProperties at %d: not between InstallFiles and InstallFinalize", s)
	}
	if r := find(seq, "Action", "WriteSilentProperties"); !strings.Contains(r["Condition"], "NOT Installed AND NOT WIX_UPGRADE_DETECTED") {
		t.Errorf("WriteSilentProperties runs on upgrades too: %q", r["Condition"])
	}
	// Once the deferred action's command line is formatted, the secret is
	// forgotten, so not even Wine's closing property list logs it.
	forget := find(table(t, msi, "CustomAction"), "Action", "ForgetClientSecret")
	if forget == nil || forget["Type"] != "51" || forget["Source"] != "CLIENTSECRET" || forget["Target"] != "" {
		t.Errorf("ForgetClientSecret action: %v", forget)
	}
	if s := at("ForgetClientSecret"); s <= at("InstallFinalize") {
		t.Errorf("ForgetClientSecret at %d runs before InstallFinalize; the deferred action would get no secret", s)
	}

	// The files inside: the exe as built, the INI as the example with CRLF.
	dir := t.TempDir()
	run(t, "msiextract", "-C", dir, msi)
	exe := findFile(t, dir, "presencebridge.exe")
	built, _ := os.ReadFile(binary(t, "windows"))
	if got, _ := os.ReadFile(exe); !bytes.HasPrefix(got, []byte("MZ")) || !bytes.Equal(got, built) {
		t.Error("the exe in the MSI is not the one built")
	}
	example, _ := os.ReadFile("../Presence.ini.example")
	ini := findFile(t, dir, "Presence.ini")
	if got, _ := os.ReadFile(ini); string(got) != strings.ReplaceAll(string(example), "\n", "\r\n") {
		t.Error("the MSI's Presence.ini is not the example with CRLF line endings")
	}
	if !strings.Contains(filepath.ToSlash(ini), "presencebridge/Presence.ini") {
		t.Errorf("Presence.ini extracted to %s", ini)
	}
	// The Grafana dashboard, as shipped, beside the exe and README in its own
	// component (so an upgrade from a version without it installs it).
	dashboard := findFile(t, dir, "presencebridge-dashboard.json")
	if got, _ := os.ReadFile(dashboard); len(got) == 0 || !bytes.Equal(got, mustRead(t, "grafana/presencebridge-dashboard.json")) {
		t.Error("the MSI's Grafana dashboard is not packaging/grafana/presencebridge-dashboard.json")
	}
	if filepath.Dir(dashboard) != filepath.Dir(exe) {
		t.Errorf("the dashboard is extracted to %s, not beside the exe in %s", dashboard, filepath.Dir(exe))
	}
	if r := find(comps, "Component", "Dashboard"); r == nil || r["Directory_"] != "INSTALLDIR" || r["KeyPath"] != "presencebridge_dashboard.json" {
		t.Errorf("component Dashboard: %v", r)
	}
	if r := find(table(t, msi, "FeatureComponents"), "Component_", "Dashboard"); r == nil || r["Feature_"] != "Complete" {
		t.Errorf("the Dashboard component is in no feature: %v", r)
	}

	// Another build: a new ProductCode, the same UpgradeCode (so it upgrades this one).
	other := properties(t, buildMSI(t, "1.0.6"))
	c1, u1 := props["ProductCode"], props["UpgradeCode"]
	c2, u2 := other["ProductCode"], other["UpgradeCode"]
	if c1 == c2 || u1 != u2 || !regexp.MustCompile(`^\{[0-9A-F-]{36}\}$`).MatchString(c1) {
		t.Errorf("ProductCodes %s, %s; UpgradeCodes %s, %s", c1, c2, u1, u2)
	}
}

func findFile(t *testing.T, dir, name string) string {
	t.Helper()
	var found string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Name() == name {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("%s is not in the MSI", name)
	}
	return found
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
