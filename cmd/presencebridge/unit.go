package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/packaging"
)

// unitParamsFor is the unit for this binary and configuration: the service runs as
// the presencebridge account when it exists (the DEB creates it), else as root.
func unitParamsFor(cfg *config.Config) (packaging.UnitParams, error) {
	bin, err := os.Executable()
	if err != nil {
		return packaging.UnitParams{}, err
	}
	if bin, err = filepath.EvalSymlinks(bin); err != nil {
		return packaging.UnitParams{}, err
	}
	p := packaging.UnitParams{Binary: bin, Config: cfg.Path, StateDir: filepath.Dir(cfg.StateFile)}
	if _, err := user.Lookup(serviceName); err == nil {
		p.User = serviceName
	}
	if cfg.LogFile != "" && filepath.Dir(cfg.LogFile) != p.StateDir {
		p.LogDir = filepath.Dir(cfg.LogFile)
	}
	return p, nil
}

const (
	unitName    = serviceName + ".service"
	unitPath    = "/etc/systemd/system/" + unitName // what install writes
	debUnitPath = "/lib/systemd/system/" + unitName // what the DEB ships
)

// installUnit writes the unit for cfg (checked by the caller) to
// /etc/systemd/system and enables it.
func installUnit(g globals, cfg *config.Config) error {
	if _, err := os.Stat(debUnitPath); err == nil {
		return fmt.Errorf("the DEB package has installed the service already (%s); use systemctl enable --now presencebridge", debUnitPath)
	}
	if _, err := os.Stat(unitPath); err == nil {
		return fmt.Errorf("%s exists already; presencebridge service uninstall first", unitPath)
	}
	p, err := unitParamsFor(cfg)
	if err != nil {
		return err
	}
	if p.User == "" {
		fmt.Fprintln(g.stderr, "presencebridge service install: there is no presencebridge account, so the service runs as root; to run it unprivileged: useradd --system --home-dir /var/lib/presencebridge --shell /usr/sbin/nologin presencebridge, give it the state folder, and install again")
	}
	if err := os.WriteFile(unitPath, []byte(packaging.Unit(p)), 0o644); err != nil {
		return err
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", unitName}} {
		if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// uninstallUnit disables and removes what installUnit wrote.
func uninstallUnit() error {
	if _, err := os.Stat(unitPath); err != nil {
		if _, err := os.Stat(debUnitPath); err == nil {
			return fmt.Errorf("the service belongs to the DEB package: apt remove presencebridge")
		}
		return fmt.Errorf("%s: not installed", unitPath)
	}
	exec.Command("systemctl", "disable", "--now", unitName).Run()
	if err := os.Remove(unitPath); err != nil {
		return err
	}
	return exec.Command("systemctl", "daemon-reload").Run()
}
