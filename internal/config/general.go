package config

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// general reads [General]: files, logging, the local endpoints.
func (l *loader) general(cfg *Config, s *section) {
	cfg.StateFile = l.pathOr(s.get("StateFile"), DefaultStateFile)
	if fi, err := os.Stat(cfg.StateFile); err == nil && fi.IsDir() {
		e := s.get("StateFile")
		e.value = cfg.StateFile
		l.bad(e, "this is a folder; give the state file's name in it, e.g. %s", filepath.Join(cfg.StateFile, DefaultStateFile))
	}
	cfg.UsersFile = l.pathOr(s.get("UsersFile"), DefaultUsersFile)
	cfg.LogLevel = "info"
	if e := s.get("LogLevel"); e.set {
		switch v := strings.ToLower(e.value); v {
		case "debug", "info", "warn", "error":
			cfg.LogLevel = v
		case "warning":
			cfg.LogLevel = "warn"
		default:
			l.bad(e, "unknown level%s; use debug, info, warn or error", didYouMean(e.value, []string{"debug", "info", "warn", "error"}))
		}
	}
	cfg.LogFormat = "text"
	if e := s.get("LogFormat"); e.set {
		switch v := strings.ToLower(e.value); v {
		case "text", "json":
			cfg.LogFormat = v
		default:
			l.bad(e, "unknown format%s; use text or json", didYouMean(e.value, []string{"text", "json"}))
		}
	}
	if e := s.get("LogFile"); e.set {
		cfg.LogFile = resolvePath(l.dir, e.value)
	}
	cfg.ControlAddr = DefaultControlAddr
	if e := s.get("ControlAddr"); e.set {
		cfg.ControlAddr = l.controlAddr(e)
	}
	cfg.MetricsAddr = DefaultMetricsAddr
	if e := s.get("MetricsAddr"); e.set {
		cfg.MetricsAddr = l.metricsAddr(e)
	}
	cfg.SecretWarnDays = l.integer(s.get("SecretWarnDays"), DefaultSecretWarnDays, 1)
	cfg.EmitAllOnStart = l.boolean(s.get("EmitAllOnStart"), false)
}

// metricsAddr reads host:port (any host: a monitoring server may scrape from
// elsewhere) or off.
func (l *loader) metricsAddr(e entry) string {
	if strings.EqualFold(e.value, "off") {
		return ""
	}
	_, port, err := net.SplitHostPort(e.value)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
		l.bad(e, "not host:port; use e.g. 127.0.0.1:9464 (loopback only) or 0.0.0.0:9464 (scraped from elsewhere), or off")
		return ""
	}
	return e.value
}

// controlAddr reads a loopback host:port (the endpoint has no authentication) or off.
func (l *loader) controlAddr(e entry) string {
	if strings.EqualFold(e.value, "off") {
		return ""
	}
	host, port, err := net.SplitHostPort(e.value)
	if err != nil {
		l.bad(e, "not host:port; use a loopback address such as 127.0.0.1:8399, or off")
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		l.bad(e, "port %q is not a number from 0 to 65535; use e.g. 127.0.0.1:8399, or off", port)
		return ""
	}
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		l.bad(e, "not a loopback address; the control endpoint has no authentication, so use 127.0.0.1:<port>, [::1]:<port> or localhost:<port>, or off")
		return ""
	}
	return e.value
}
