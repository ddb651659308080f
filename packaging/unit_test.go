package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestUnitForACopiedBinary(t *testing.T) {
	u := Unit(UnitParams{Binary: "/opt/presence bridge/presencebridge", Config: "/opt/presence bridge/Presence.ini", StateDir: "/opt/presence bridge"})
	for _, want := range []string{
		"\nExecStart=\"/opt/presence bridge/presencebridge\" --config \"/opt/presence bridge/Presence.ini\" run\n",
		"\nReadWritePaths=\"/opt/presence bridge\"\n",
		"\nType=notify\n", "\nRestartPreventExitStatus=3\n", "\nProtectSystem=strict\n", "\nNoNewPrivileges=yes\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q:\n%s", want, u)
		}
	}
	for _, not := range []string{"User=", "StateDirectory=", "LogsDirectory="} {
		if strings.Contains(u, not) {
			t.Errorf("unit for root with its state in /opt has %q:\n%s", not, u)
		}
	}
}

func TestDebUnit(t *testing.T) {
	u := Unit(DebUnit)
	for _, want := range []string{
		"\nUser=presencebridge\nGroup=presencebridge\n",
		"\nExecStart=/usr/bin/presencebridge --config /etc/presencebridge/Presence.ini run\n",
		"\nStateDirectory=presencebridge\nStateDirectoryMode=0700\n",
		"\nLogsDirectory=presencebridge\n",
		"\nReadWritePaths=/var/lib/presencebridge /var/log/presencebridge\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("DEB unit lacks %q:\n%s", want, u)
		}
	}
}

// systemd's own checks on the DEB unit: it parses without complaint (but for the
// binary, which is not installed here), and `systemd-analyze security` rates its
// exposure (1.4 when written; 10 is a unit with no sandboxing).
func TestDebUnitPassesSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd)")
	}
	path := filepath.Join(t.TempDir(), "presencebridge.service")
	if err := os.WriteFile(path, []byte(Unit(DebUnit)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(sa, "verify", path).CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.Contains(line, "Command /usr/bin/presencebridge is not executable") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	out, err = exec.Command(sa, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if level, _ := strconv.ParseFloat(m[1], 64); level > 2.0 {
		t.Errorf("exposure level %.1f; the unit had 1.4 when written: a sandboxing line was lost", level)
	}
	t.Logf("systemd-analyze security: exposure %s", m[1])
}
