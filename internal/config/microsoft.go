package config

import (
	"fmt"
	"slices"
	"strings"
)

// Microsoft is the [Microsoft] section: hosts of the cloud in use.
type Microsoft struct {
	Cloud    string // global, usgov, usgovdod or china: the defaults of the two URLs
	LoginURL string // authority host, no trailing slash
	GraphURL string // Graph base including the version, no trailing slash
}

// Clouds are the Microsoft clouds [Microsoft] Cloud selects: sign-in host and
// Graph base (learn.microsoft.com/graph/deployments).
var Clouds = []struct{ Name, LoginURL, GraphURL, About string }{
	{"global", DefaultLoginURL, DefaultGraphURL, "Microsoft's global service, also GCC (Moderate)"},
	{"usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us/v1.0", "US Government L4: GCC High"},
	{"usgovdod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us/v1.0", "US Government L5: DoD"},
	{"china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn/v1.0", "operated by 21Vianet"},
}

var cloudAliases = map[string]string{"public": "global", "commercial": "global", "gcc": "global",
	"gcchigh": "usgov", "dod": "usgovdod", "21vianet": "china"}

// microsoft reads [Microsoft]: the cloud, and the sign-in and Graph hosts that
// override its defaults.
func (l *loader) microsoft(cfg *Config, s *section) {
	cloud := Clouds[0]
	if e := s.get("Cloud"); e.set {
		name := strings.ToLower(e.value)
		if a, ok := cloudAliases[name]; ok {
			name = a
		}
		i := slices.IndexFunc(Clouds, func(c struct{ Name, LoginURL, GraphURL, About string }) bool { return c.Name == name })
		if i < 0 {
			names := make([]string, len(Clouds))
			for j, c := range Clouds {
				names[j] = c.Name
			}
			l.bad(e, "unknown cloud%s; use global, usgov (GCC High), usgovdod (DoD) or china (21Vianet)", didYouMean(e.value, names))
		} else {
			cloud = Clouds[i]
		}
	}
	cfg.Microsoft.Cloud = cloud.Name
	cfg.Microsoft.LoginURL = l.loginURL(s.get("LoginURL"), cloud.LoginURL)
	cfg.Microsoft.GraphURL = l.graphURL(s.get("GraphURL"), cloud.GraphURL)
}

// loginURL reads a sign-in host (https, no path); empty gives def.
func (l *loader) loginURL(e entry, def string) string {
	if !e.set {
		return def
	}
	u, problem := parseHTTPSURL(e.value, "https://login.microsoftonline.com")
	if problem == "" && strings.Trim(u.Path, "/") != "" {
		problem = fmt.Sprintf("has a path (%s); LoginURL is the sign-in host only, put the tenant in TenantID, e.g. https://login.microsoftonline.com", u.Path)
	}
	if problem != "" {
		l.bad(e, "%s", problem)
		return def
	}
	return strings.TrimRight(e.value, "/")
}

// graphURL reads a Graph base with its API version (https); empty gives def.
func (l *loader) graphURL(e entry, def string) string {
	if !e.set {
		return def
	}
	u, problem := parseHTTPSURL(e.value, "https://graph.microsoft.com/v1.0")
	if problem == "" && strings.Trim(u.Path, "/") == "" {
		problem = "has no API version; use e.g. https://graph.microsoft.com/v1.0"
	}
	if problem != "" {
		l.bad(e, "%s", problem)
		return def
	}
	return strings.TrimRight(e.value, "/")
}
