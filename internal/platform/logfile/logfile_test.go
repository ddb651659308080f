package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "presencebridge.log")
	w, err := Open(path, 100, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		fmt.Fprintf(w, "line %02d %s\n", i, strings.Repeat("x", 20)) // 29 bytes
	}
	w.Close()
	cur, _ := os.ReadFile(path)
	one, _ := os.ReadFile(path + ".1")
	two, _ := os.ReadFile(path + ".2")
	if !strings.Contains(string(cur), "line 19") || len(cur) > 100 || len(one) == 0 || len(two) == 0 {
		t.Errorf("current %q, .1 %q, .2 %q", cur, one, two)
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more files kept than Keep")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(string(one), "line 1") || strings.Contains(string(one), "line 19") {
		t.Errorf(".1 should hold the lines before the current file: %q", one)
	}
}
