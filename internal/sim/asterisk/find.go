package asterisk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/presencebridge/presencebridge/internal/sim/procgroup"
)

// Version is the Asterisk release the harness runs.
const Version = "22.10.1"

const (
	// EnvHome names an unpacked Asterisk folder to use instead of the tarball,
	// e.g. PRESENCEBRIDGE_ASTERISK=/opt/asterisk-22.10.1 (with sbin/asterisk).
	EnvHome = "PRESENCEBRIDGE_ASTERISK"
	// Tarball is the release built for these tests, kept in ../shared/pbx beside
	// the repository (its README says how it was built).
	Tarball = "asterisk-" + Version + "-debian12-amd64.tar.xz"
	// folder is the tarball's top folder, and the name of the cached copy.
	folder = "asterisk-" + Version
)

// Libraries are the Debian 12 packages Asterisk's binary and modules link
// against (checked with readelf and dpkg -S); .ci/run installs them.
const Libraries = "libxml2 libxslt1.1 libsqlite3-0 libssl3 libjansson4 libuuid1 libedit2 libicu72 libcrypt1"

// Find returns the folder of an unpacked Asterisk (with sbin/asterisk, lib/ and
// data/), looking in order at:
//   - $PRESENCEBRIDGE_ASTERISK, when set (and then nowhere else);
//   - the cached copy, <user cache folder>/presencebridge/asterisk-22.10.1
//     (os.UserCacheDir: $XDG_CACHE_HOME or ~/.cache);
//   - the tarball in shared/pbx in the working folder or a folder above it
//     (../shared/pbx from the repository's root), which it unpacks into the
//     cache once: into a temporary folder beside it, then renamed into place,
//     so test packages running at the same time never see half a copy.
//
// It also runs `asterisk -V` so a missing shared library is reported here, with
// the apt-get line that installs it.
func Find() (string, error) {
	if !procgroup.Supported {
		return "", errors.New("the Asterisk test PBX runs on Linux only")
	}
	if home := os.Getenv(EnvHome); home != "" {
		if err := check(home); err != nil {
			return "", fmt.Errorf("%s=%s: %w (point it at an unpacked %s folder, or unset it to unpack ../shared/pbx/%s)",
				EnvHome, home, err, folder, Tarball)
		}
		return home, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no folder to unpack Asterisk into (%w); set %s to an unpacked %s folder", err, EnvHome, folder)
	}
	cache = filepath.Join(cache, "presencebridge")
	home := filepath.Join(cache, folder)
	if _, err := os.Stat(filepath.Join(home, "sbin", "asterisk")); err == nil {
		return home, check(home)
	}
	tarball, err := findTarball()
	if err != nil {
		return "", err
	}
	if err := unpack(tarball, cache); err != nil {
		return "", err
	}
	return home, check(home)
}

// check says whether home holds a runnable Asterisk of this Version.
func check(home string) error {
	for _, p := range []string{"sbin/asterisk", "lib/modules", "data/rest-api"} {
		if _, err := os.Stat(filepath.Join(home, p)); err != nil {
			return fmt.Errorf("no Asterisk there (%s is missing)", p)
		}
	}
	cmd := exec.Command(filepath.Join(home, "sbin", "asterisk"), "-V")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(home, "lib"))
	out, err := cmd.CombinedOutput()
	out = bytes.TrimSpace(out)
	if bytes.Contains(out, []byte("error while loading shared libraries")) {
		return fmt.Errorf("%s/sbin/asterisk cannot start: %s (install its libraries: apt-get install -y %s)", home, out, Libraries)
	}
	if err != nil || !bytes.HasPrefix(out, []byte("Asterisk "+Version)) {
		return fmt.Errorf("%s/sbin/asterisk -V answered %q (%v); want Asterisk %s", home, out, err, Version)
	}
	return nil
}

// findTarball looks for shared/pbx/Tarball in the working folder and each folder
// above it: from a package folder of the repository that finds ../shared/pbx
// beside the repository's root.
func findTarball() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "shared", "pbx", Tarball)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", fmt.Errorf("Asterisk not found: no shared/pbx/%s in %s or a folder above it (put it in ../shared/pbx beside the repository, or set %s to an unpacked %s folder)",
		Tarball, wd, EnvHome, folder)
}

// unpack unpacks tarball into cache/folder: into a temporary folder in cache
// first, then renamed. When another process renamed its copy first, that copy
// is kept and this one removed.
func unpack(tarball, cache string) error {
	if _, err := exec.LookPath("xz"); err != nil {
		return fmt.Errorf("cannot unpack %s: xz is missing (install it with: apt-get install -y xz-utils)", tarball)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cache, err)
	}
	tmp, err := os.MkdirTemp(cache, ".unpack-")
	if err != nil {
		return fmt.Errorf("unpack %s: %w", tarball, err)
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.Command("tar", "-xJf", tarball, "-C", tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("unpack %s into %s: %v: %s", tarball, tmp, err, strings.TrimSpace(string(out)))
	}
	home := filepath.Join(cache, folder)
	if err := os.Rename(filepath.Join(tmp, folder), home); err != nil {
		if _, statErr := os.Stat(filepath.Join(home, "sbin", "asterisk")); statErr == nil {
			return nil // another process was first: its copy is complete, as renames are atomic
		}
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("unpack %s: it holds no %s folder", tarball, folder)
		}
		return fmt.Errorf("unpack %s: %w", tarball, err)
	}
	return nil
}
