// Package internal_test checks the edges ARCHITECTURE.md promises between the
// folders of internal/: which side may import which, and that the service binary
// links no test code.
package internal_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/presencebridge/presencebridge/"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// list runs go list over the module's packages (tests left out).
func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json=ImportPath,Imports,Deps"}, patterns...)...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func under(path, dir string) bool {
	return path == mod+dir || strings.HasPrefix(path, mod+dir+"/")
}

func TestEdges(t *testing.T) {
	pkgs := list(t, "./...")
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; is the test run from internal/?", len(pkgs))
	}
	rules := []struct {
		from    string   // packages in this folder...
		never   []string // ...depend on none of these folders
		because string
	}{
		{"cmd/presencebridge", []string{"internal/testkit"}, "the service binary links no test rig"},
		{"internal/platform", []string{"internal/teams", "internal/pbx", "internal/compose", "internal/delivery", "internal/app", "internal/config", "internal/store", "internal/presence", "internal/users", "internal/sim"}, "the platform is the ground floor"},
		{"internal/store", []string{"internal/teams", "internal/pbx", "internal/compose", "internal/delivery", "internal/app", "internal/config"}, "the state file knows buckets, not their owners"},
		{"internal/presence", []string{"internal/teams", "internal/pbx", "internal/compose", "internal/delivery", "internal/app", "internal/config"}, "the model is below both sides"},
		{"internal/users", []string{"internal/teams", "internal/pbx", "internal/compose", "internal/delivery", "internal/app", "internal/config"}, "the model is below both sides"},
		{"internal/teams", []string{"internal/pbx", "internal/compose", "internal/delivery", "internal/app", "internal/config"}, "the Teams side meets the PBX side only in compose"},
		{"internal/pbx", []string{"internal/teams", "internal/compose", "internal/app", "internal/config"}, "the PBX side meets the Teams side only in compose"},
		{"internal/delivery", []string{"internal/teams", "internal/pbx", "internal/compose", "internal/app", "internal/config"}, "delivery knows targets only as delivery.Target"},
		{"internal/compose", []string{"internal/teams", "internal/pbx", "internal/app", "internal/config"}, "compose sees the sides through its interfaces"},
	}
	for _, p := range pkgs {
		if !under(p.ImportPath, "internal/testkit") {
			for _, imp := range p.Imports {
				if under(imp, "internal/testkit") {
					t.Errorf("%s imports %s: only tests import the test kit", p.ImportPath, imp)
				}
			}
		}
		for _, r := range rules {
			if !under(p.ImportPath, r.from) {
				continue
			}
			for _, dep := range p.Deps {
				for _, n := range r.never {
					if under(dep, n) {
						t.Errorf("%s depends on %s; %s", p.ImportPath, dep, r.because)
					}
				}
			}
		}
	}
	for _, p := range list(t, "./cmd/presencebridge", "./internal/app") {
		for _, dep := range p.Deps {
			if dep == "testing" && p.ImportPath == mod+"cmd/presencebridge" {
				t.Errorf("the service binary links the package testing")
			}
		}
		for _, imp := range p.Imports {
			if imp == "go.etcd.io/bbolt" && p.ImportPath == mod+"internal/app" {
				t.Errorf("internal/app imports bbolt; the state's owners read and write it")
			}
		}
	}
}
