package asterisk

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/presencebridge/presencebridge/internal/testkit"
)

// needAsterisk skips a test without Asterisk, or fails it under CI=true.
func needAsterisk(t testing.TB) string {
	t.Helper()
	return testkit.Need(t, "the Asterisk integration test", Find)
}

// Without Asterisk, the tests skip a developer's run but fail CI's.
func TestRequireFailsUnderCI(t *testing.T) {
	testkit.CheckToolUnderCI(t, EnvHome, folder, func(tb testing.TB) { needAsterisk(tb) })
}

// Find unpacks the tarball into an empty cache once, even when several test
// packages ask at the same time, and leaves no temporary folder behind.
func TestFindUnpacksOnce(t *testing.T) {
	needAsterisk(t) // the tarball (or a copy) is there
	if os.Getenv(EnvHome) != "" {
		t.Skipf("%s is set: Find does not unpack", EnvHome)
	}
	if _, err := findTarball(); err != nil {
		testkit.Tool(t, "the Asterisk unpack test", err)
	}
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	var wg sync.WaitGroup
	homes, errs := make([]string, 3), make([]error, 3)
	for i := range homes {
		wg.Go(func() { homes[i], errs[i] = Find() })
	}
	wg.Wait()
	want := filepath.Join(cache, "presencebridge", folder)
	for i := range homes {
		if errs[i] != nil || homes[i] != want {
			t.Errorf("Find #%d = %q, %v; want %q", i, homes[i], errs[i], want)
		}
	}
	left, _ := filepath.Glob(filepath.Join(cache, "presencebridge", ".unpack-*"))
	if len(left) > 0 {
		t.Errorf("temporary folders left behind: %v", left)
	}
	if err := check(want); err != nil {
		t.Error(err)
	}
}
