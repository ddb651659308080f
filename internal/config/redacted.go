package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Redacted renders the effective configuration (defaults filled in, paths resolved,
// per-account values resolved) as INI text for `presencebridge verify` and support
// tickets. ClientSecret and the proxy password appear as "***".
func (c *Config) Redacted() string {
	var b strings.Builder
	kv := func(k, v string) { b.WriteString(strings.TrimSpace(k+" = "+v) + "\n") }
	fmt.Fprintf(&b, "; effective configuration from %s\n", c.Path)
	kv(keyTeamsEnable, bit(c.TeamsEnabled))
	kv(keyWinningTechnology, c.WinningTechnology)

	b.WriteString("\n[General]\n")
	kv("StateFile", c.StateFile)
	kv("UsersFile", c.UsersFile)
	kv("LogLevel", c.LogLevel)
	ctl := c.ControlAddr
	if ctl == "" {
		ctl = "off"
	}
	kv("ControlAddr", ctl)
	kv("EmitAllOnStart", bit(c.EmitAllOnStart))

	b.WriteString("\n[Microsoft]\n")
	kv("LoginURL", c.Microsoft.LoginURL)
	kv("GraphURL", c.Microsoft.GraphURL)

	b.WriteString("\n[Proxy]\n")
	kv("URL", redactRawURL(c.Proxy.URL))
	kv("CAFile", c.Proxy.CAFile)

	p := c.Polling
	b.WriteString("\n[Polling]\n")
	kv("Interval", formatDuration(p.Interval))
	kv("BudgetRequests", strconv.Itoa(p.BudgetRequests))
	kv("BudgetWindow", formatDuration(p.BudgetWindow))
	kv("BudgetShare", percent(p.BudgetShare))
	kv("RequestTimeout", formatDuration(p.RequestTimeout))
	kv("ResolveInterval", formatDuration(p.ResolveInterval))
	kv("ResolveRate", strconv.FormatFloat(p.ResolveRate, 'f', -1, 64))

	for _, a := range c.Accounts {
		fmt.Fprintf(&b, "\n[Account.%s]\n", a.ID)
		kv("TenantID", a.TenantID)
		kv("ClientID", a.ClientID)
		kv("Auth", string(a.Auth))
		kv("ClientSecret", a.ClientSecret.String())
		kv("CertificateFile", a.CertificateFile)
		kv("CertificateKeyFile", a.CertificateKeyFile)
		kv("Username", a.Username)
		kv("Domains", strings.Join(a.Domains, ", "))
		kv("LoginURL", a.LoginURL)
		kv("GraphURL", a.GraphURL)
		kv("BudgetRequests", strconv.Itoa(a.BudgetRequests))
		kv("BudgetWindow", formatDuration(a.BudgetWindow))
		kv("BudgetShare", percent(a.BudgetShare))
	}
	return b.String()
}

func bit(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

func percent(f float64) string {
	return strconv.FormatFloat(math.Round(f*10000)/100, 'f', -1, 64)
}
