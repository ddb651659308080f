package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/wine"
)

// require skips the test when tool is missing, but fails it under CI (CI=true),
// where .ci/run installs everything the tests need (testkit.Tool).
func require(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testkit.Tool(t, "the packaging tests", fmt.Errorf("%s is not installed", tool))
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binary builds presencebridge for Linux once per test run, with the version given
// to the first caller baked in, into a folder removed by TestMain.
func binary(t *testing.T, goos string) string {
	t.Helper()
	binOnce.Do(func() { binDir, binErr = os.MkdirTemp("", "presencebridge-pkg-") })
	if binErr != nil {
		t.Fatal(binErr)
	}
	name := "presencebridge"
	if goos == "windows" {
		name += ".exe"
	}
	path := filepath.Join(binDir, goos, name)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", path, "../cmd/presencebridge")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	wine.Cleanup()
	os.Exit(code)
}

var (
	debMu    sync.Mutex
	debBuilt = map[string]string{}
)

// buildDeb runs scripts/build-deb.sh, as `make deb` does, once per version (gzip:
// xz takes ten seconds a build and changes nothing the tests look at).
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	debMu.Lock()
	defer debMu.Unlock()
	if p, ok := debBuilt[version]; ok {
		return p
	}
	bin := binary(t, "linux")
	cmd := exec.Command("../scripts/build-deb.sh", bin, version, filepath.Join(binDir, "deb"))
	cmd.Env = append(os.Environ(), "DEB_COMPRESS=gzip")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, out)
	}
	s := strings.TrimSpace(string(out))
	debBuilt[version] = s[strings.LastIndex(s, "\n")+1:]
	return debBuilt[version]
}

// The DEB's files, owners, modes, conffiles, control fields and scripts.
func TestDebContents(t *testing.T) {
	require(t, "dpkg-deb")
	deb := buildDeb(t, "1.2.3+4.gabcdef0")
	listing := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		`-rwxr-xr-x root/root .* \./usr/bin/presencebridge`,
		`-rw-r----- root/root .* \./etc/presencebridge/Presence\.ini`,
		`-rw-r----- root/root .* \./etc/presencebridge/users\.csv`,
		`-rw-r--r-- root/root .* \./lib/systemd/system/presencebridge\.service`,
		`-rw-r--r-- root/root .* \./usr/share/presencebridge/Presence\.ini\.dist`,
		`-rw-r--r-- root/root .* \./usr/share/presencebridge/grafana/presencebridge-dashboard\.json`,
		`-rw-r--r-- root/root .* \./usr/share/doc/presencebridge/README\.md`,
		`-rw-r--r-- root/root .* \./usr/share/doc/presencebridge/copyright`,
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(listing) {
			t.Errorf("dpkg-deb -c has no line like %s:\n%s", want, listing)
		}
	}
	for field, want := range map[string]string{"Package": "presencebridge", "Version": "1.2.3+4.gabcdef0", "Architecture": "amd64", "Depends": "passwd", "Section": "net"} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("control field %s = %q; want %q", field, got, want)
		}
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if string(conffiles) != "/etc/presencebridge/Presence.ini\n/etc/presencebridge/users.csv\n" {
		t.Errorf("conffiles = %q", conffiles)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(ctl, s)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v; want an executable script", s, fi, err)
			continue
		}
		run(t, "sh", "-n", p)
		raw, _ := os.ReadFile(p)
		// Every path the scripts touch goes through DPKG_ROOT (the install test
		// below depends on it, and so does a bootstrap into a chroot). Text in a
		// here-document is printed for the engineer, not touched.
		inHeredoc := false
		for i, line := range strings.Split(string(raw), "\n") {
			if systemPath.MatchString(line) &&
				!strings.Contains(line, "$root/") && !strings.HasPrefix(strings.TrimSpace(line), "#") &&
				!strings.Contains(line, "/run/systemd/system") && !strings.Contains(line, "--home-dir") &&
				!strings.Contains(line, "--shell") && !strings.Contains(line, "/usr/bin/deb-systemd-helper") &&
				!inHeredoc {
				t.Errorf("%s:%d touches a path outside DPKG_ROOT: %s", s, i+1, line)
			}
			switch {
			case strings.Contains(line, "<<'STEPS'"):
				inHeredoc = true
			case strings.TrimSpace(line) == "STEPS":
				inHeredoc = false
			}
		}
	}
	data := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, data)
	unit, _ := os.ReadFile(filepath.Join(data, "lib/systemd/system/presencebridge.service"))
	if string(unit) != Unit(DebUnit) {
		t.Errorf("the DEB's unit is not Unit(DebUnit); regenerate deb/presencebridge.service:\n%s", unit)
	}
	ini, _ := os.ReadFile(filepath.Join(data, "etc/presencebridge/Presence.ini"))
	example, _ := os.ReadFile("../Presence.ini.example")
	want := regexp.MustCompile(`(?m)^StateFile =.*$`).ReplaceAllString(string(example), "StateFile = /var/lib/presencebridge/presencebridge.db")
	if string(ini) != want || !strings.Contains(string(ini), "\nStateFile = /var/lib/presencebridge/presencebridge.db\n") {
		t.Errorf("the DEB's Presence.ini is not the example with StateFile in /var/lib/presencebridge")
	}
	dist, _ := os.ReadFile(filepath.Join(data, "usr/share/presencebridge/Presence.ini.dist"))
	if !bytes.Equal(dist, ini) {
		t.Error("Presence.ini.dist differs from the shipped Presence.ini")
	}
	dashboard, _ := os.ReadFile(filepath.Join(data, "usr/share/presencebridge/grafana/presencebridge-dashboard.json"))
	if shipped, _ := os.ReadFile("grafana/presencebridge-dashboard.json"); len(shipped) == 0 || !bytes.Equal(dashboard, shipped) {
		t.Error("the DEB's Grafana dashboard is not packaging/grafana/presencebridge-dashboard.json")
	}
}

// systemPath finds an absolute path into the system in a maintainer script line.
var systemPath = regexp.MustCompile(`(^|[\s"])/(etc|var|usr|lib)/`)

// needRoot skips a test that installs the package: dpkg --root sets owners and
// the postinst creates an account, which takes root (as on the CI machine). It
// skips rather than fails under CI too: a CI that runs make test unprivileged
// cannot give it root, and the contents test above still runs.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the DEB install test needs root (dpkg --root sets owners, postinst adds an account); run make test as root")
	}
}

// throwawayRoot is an empty system for dpkg --root: a dpkg database and the
// account files with root in them.
func throwawayRoot(t *testing.T) string {
	t.Helper()
	r := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"} {
		os.MkdirAll(filepath.Join(r, d), 0o755)
	}
	files := map[string]string{
		"var/lib/dpkg/status": "", "var/lib/dpkg/available": "",
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
		"etc/shadow": "root:*:19000:0:99999:7:::\n", "etc/gshadow": "root:*::\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(r, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// dpkg runs dpkg on the throwaway root. The maintainer scripts run on the host
// with DPKG_ROOT set (--force-script-chrootless), since the root has no shell of
// its own; --force-depends because it has no packages either (passwd is the
// host's).
func dpkg(t *testing.T, root string, args ...string) string {
	t.Helper()
	return run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
}

func stat(t *testing.T, path string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode() & (os.ModePerm | os.ModeSetgid)
}

// Install, then the field engineer's edits and a sign-in, then an upgrade that
// keeps both, then remove (configuration and state kept) and purge (gone).
func TestDebInstallUpgradeRemovePurge(t *testing.T) {
	require(t, "dpkg-deb", "dpkg", "useradd")
	needRoot(t)
	v1, v2 := buildDeb(t, "1.0.0"), buildDeb(t, "1.0.1")
	r := throwawayRoot(t)
	out := dpkg(t, r, "-i", v1)
	if !strings.Contains(out, "not started: configure it first") {
		t.Errorf("a first install with the shipped Presence.ini does not tell the first-run steps:\n%s", out)
	}
	passwd, _ := os.ReadFile(filepath.Join(r, "etc/passwd"))
	m := regexp.MustCompile(`(?m)^presencebridge:x:(\d+):(\d+):[^:]*:/var/lib/presencebridge:/usr/sbin/nologin$`).FindStringSubmatch(string(passwd))
	if m == nil {
		t.Fatalf("no presencebridge system account:\n%s", passwd)
	}
	u64, _ := strconv.ParseUint(m[1], 10, 32) // the pattern matched digits
	g64, _ := strconv.ParseUint(m[2], 10, 32)
	uid, gid := uint32(u64), uint32(g64)
	for path, want := range map[string][3]any{
		"var/lib/presencebridge":                    {uid, gid, os.FileMode(0o700)},
		"var/log/presencebridge":                    {uid, gid, os.FileMode(0o700)},
		"etc/presencebridge":                        {uint32(0), gid, os.FileMode(0o750) | os.ModeSetgid},
		"etc/presencebridge/Presence.ini":           {uint32(0), gid, os.FileMode(0o640)},
		"etc/presencebridge/users.csv":              {uint32(0), gid, os.FileMode(0o640)},
		"usr/bin/presencebridge":                    {uint32(0), uint32(0), os.FileMode(0o755)},
		"lib/systemd/system/presencebridge.service": {uint32(0), uint32(0), os.FileMode(0o644)},
	} {
		u, g, mode := stat(t, filepath.Join(r, path))
		if u != want[0] || g != want[1] || mode != want[2] {
			t.Errorf("/%s: %d:%d %v; want %d:%d %v", path, u, g, mode, want[0], want[1], want[2])
		}
	}
	if target, err := os.Readlink(filepath.Join(r, "etc/systemd/system/multi-user.target.wants/presencebridge.service")); err != nil || target != "/lib/systemd/system/presencebridge.service" {
		t.Errorf("the unit is not enabled: %q, %v", target, err)
	}
	if v := run(t, filepath.Join(r, "usr/bin/presencebridge"), "version"); !strings.Contains(v, "presencebridge ") {
		t.Errorf("the installed binary says %q", v)
	}

	// The field: an edited INI, a users file, the state file with its tokens.
	ini := filepath.Join(r, "etc/presencebridge/Presence.ini")
	raw, _ := os.ReadFile(ini)
	edited := strings.Replace(string(raw), "TenantID = contoso.onmicrosoft.com", "TenantID = fabrikam.onmicrosoft.com", 1)
	os.WriteFile(ini, []byte(edited), 0o640)
	users := filepath.Join(r, "etc/presencebridge/users.csv")
	os.WriteFile(users, []byte("UPN;Extension\nanna@fabrikam.com;1001\n"), 0o640)
	db := filepath.Join(r, "var/lib/presencebridge/presencebridge.db")
	tokens := []byte("bbolt file with refresh tokens")
	os.WriteFile(db, tokens, 0o600)
	os.Chown(db, int(uid), int(gid))

	dpkg(t, r, "-i", v2)
	if got, _ := os.ReadFile(ini); string(got) != edited {
		t.Error("the upgrade replaced the edited Presence.ini")
	}
	if got, _ := os.ReadFile(users); string(got) != "UPN;Extension\nanna@fabrikam.com;1001\n" {
		t.Error("the upgrade replaced the users file")
	}
	if got, _ := os.ReadFile(db); !bytes.Equal(got, tokens) {
		t.Error("the upgrade changed the state file")
	}
	if u, g, mode := stat(t, db); u != uid || g != gid || mode != 0o600 {
		t.Errorf("state file after the upgrade: %d:%d %v", u, g, mode)
	}
	if st := run(t, "dpkg-query", "--admindir="+filepath.Join(r, "var/lib/dpkg"), "-W", "-f", "${Version} ${Status}", "presencebridge"); st != "1.0.1 install ok installed" {
		t.Errorf("after the upgrade dpkg says %q", st)
	}

	dpkg(t, r, "-r", "presencebridge")
	if _, err := os.Stat(filepath.Join(r, "usr/bin/presencebridge")); err == nil {
		t.Error("remove left the binary")
	}
	if got, _ := os.ReadFile(ini); string(got) != edited {
		t.Error("remove lost the edited Presence.ini")
	}
	if got, _ := os.ReadFile(db); !bytes.Equal(got, tokens) {
		t.Error("remove lost the state file")
	}

	dpkg(t, r, "-P", "presencebridge")
	for _, gone := range []string{"etc/presencebridge", "var/lib/presencebridge", "var/log/presencebridge", "etc/systemd/system/multi-user.target.wants/presencebridge.service"} {
		if _, err := os.Lstat(filepath.Join(r, gone)); err == nil {
			t.Errorf("purge left /%s", gone)
		}
	}
}

// Configuration management put a checked Presence.ini in place before the
// install: the package starts the service (where systemd runs) instead of
// printing the first-run steps.
func TestDebInstallOverAPreparedConfig(t *testing.T) {
	require(t, "dpkg-deb", "dpkg", "useradd")
	needRoot(t)
	deb := buildDeb(t, "1.0.0")
	r := throwawayRoot(t)
	data := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, data)
	shipped, _ := os.ReadFile(filepath.Join(data, "etc/presencebridge/Presence.ini"))
	os.MkdirAll(filepath.Join(r, "etc/presencebridge"), 0o750)
	prepared := strings.Replace(string(shipped), "TenantID = contoso.onmicrosoft.com", "TenantID = fabrikam.onmicrosoft.com", 1)
	// The state folder of the shipped INI is the real /var/lib; point it into the root.
	prepared = strings.Replace(prepared, "StateFile = /var/lib/presencebridge/presencebridge.db", "StateFile = "+filepath.Join(r, "var/lib/presencebridge/presencebridge.db"), 1)
	os.WriteFile(filepath.Join(r, "etc/presencebridge/Presence.ini"), []byte(prepared), 0o640)
	os.WriteFile(filepath.Join(r, "etc/presencebridge/users.csv"), []byte("UPN;Extension\nanna@fabrikam.com;1001\n"), 0o640)
	out := dpkg(t, r, "--force-confold", "-i", deb)
	if strings.Contains(out, "not started") {
		t.Errorf("a prepared, valid configuration got the first-run steps:\n%s", out)
	}
	if got, _ := os.ReadFile(filepath.Join(r, "etc/presencebridge/Presence.ini")); string(got) != prepared {
		t.Error("the install replaced the prepared Presence.ini")
	}
}
