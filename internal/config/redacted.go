package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/presencebridge/presencebridge/internal/platform/redact"
)

// Redacted renders the effective configuration (defaults filled in, paths resolved,
// per-account values resolved) as INI text for `presencebridge verify` and support
// tickets. ClientSecret and the other passwords and secrets appear as "***".
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
	kv("LogFormat", c.LogFormat)
	kv("LogFile", c.LogFile)
	ctl := c.ControlAddr
	if ctl == "" {
		ctl = "off"
	}
	kv("ControlAddr", ctl)
	met := c.MetricsAddr
	if met == "" {
		met = "off"
	}
	kv("MetricsAddr", met)
	kv("SecretWarnDays", strconv.Itoa(c.SecretWarnDays))
	kv("EmitAllOnStart", bit(c.EmitAllOnStart))

	b.WriteString("\n[Microsoft]\n")
	kv("Cloud", c.Microsoft.Cloud)
	kv("LoginURL", c.Microsoft.LoginURL)
	kv("GraphURL", c.Microsoft.GraphURL)

	b.WriteString("\n[Proxy]\n")
	kv("URL", redactRawURL(c.Proxy.URL))
	kv("Username", c.Proxy.Username)
	kv("Password", c.Proxy.Password.String())
	kv("CAFile", c.Proxy.CAFile)

	p := c.Polling
	b.WriteString("\n[Polling]\n")
	if p.Interval == 0 {
		kv("Interval", "auto")
	} else {
		kv("Interval", formatDuration(p.Interval))
	}
	kv("MinInterval", formatDuration(p.MinInterval))
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

	b.WriteString("\n[SIP]\n")
	kv("Server", c.SIP.Server)
	kv("Event", c.SIP.Event)
	kv("Transport", c.SIP.Transport)
	kv("OutboundProxy", c.SIP.OutboundProxy)
	kv("From", c.SIP.From)
	kv("Username", c.SIP.Username)
	kv("Password", c.SIP.Password.String())
	kv("CAFile", c.SIP.CAFile)
	kv("ServerName", c.SIP.ServerName)
	kv("Expires", formatDuration(c.SIP.Expires))
	kv("Concurrency", strconv.Itoa(c.SIP.Concurrency))
	kv("Rate", strconv.FormatFloat(c.SIP.Rate, 'f', -1, 64))
	kv("Timeout", formatDuration(c.SIP.Timeout))

	b.WriteString("\n[HTTP]\n")
	// The CTI's URL may carry an API key in its query, as its errors assume too.
	kv("URL", redact.URL(c.HTTP.URL, redact.Options{Mask: redacted, DropQuery: true}))
	for _, n := range headerNames(c.HTTP.Headers) {
		kv("Header."+n, c.HTTP.Headers[n].String())
	}
	kv("Batch", bit(c.HTTP.Batch))
	kv("CAFile", c.HTTP.CAFile)
	kv("ClientCertFile", c.HTTP.ClientCertFile)
	kv("ClientKeyFile", c.HTTP.ClientKeyFile)
	kv("Timeout", formatDuration(c.HTTP.Timeout))
	kv("Concurrency", strconv.Itoa(c.HTTP.Concurrency))

	a := c.Asterisk
	b.WriteString("\n[Asterisk]\n")
	kv("Mode", a.Mode)
	kv("URL", redact.URL(a.URL, redact.Options{Mask: redacted, DropQuery: true}))
	kv("Username", a.Username)
	kv("Password", a.Password.String())
	kv("CAFile", a.CAFile)
	kv("Address", a.Address)
	kv("Secret", a.Secret.String())
	kv("Device", a.Device)
	kv("Timeout", formatDuration(a.Timeout))
	kv("Concurrency", strconv.Itoa(a.Concurrency))

	b.WriteString("\n[Delivery]\n")
	kv("RetryMin", formatDuration(c.Delivery.RetryMin))
	kv("RetryMax", formatDuration(c.Delivery.RetryMax))
	kv("BatchSize", strconv.Itoa(c.Delivery.BatchSize))
	stale := "off"
	if c.Delivery.StaleAfter > 0 {
		stale = formatDuration(c.Delivery.StaleAfter)
	}
	kv("StaleAfter", stale)
	kv("ReassertRate", strconv.FormatFloat(c.Delivery.ReassertRate, 'f', -1, 64))
	probe := "off"
	if c.Delivery.ProbeInterval > 0 {
		probe = formatDuration(c.Delivery.ProbeInterval)
	}
	kv("ProbeInterval", probe)

	b.WriteString("\n[Mapping]\n; only the rules that differ from the defaults\n")
	if c.Mapping != nil {
		c.mappingRedacted(kv)
	}

	w, wr := c.PBX.Watch, c.PBX.Write
	b.WriteString("\n[PBX]\n")
	kv("Watch", w.Watch)
	kv("SubscribeExpires", formatDuration(w.Expires))
	kv("SubscribeRate", strconv.FormatFloat(w.Rate, 'f', -1, 64))
	kv("Listen", w.Listen)
	kv("WatchURI", w.URI)
	kv("InCall", pairString(wr.InCall))
	kv("Ringing", pairString(wr.Ringing))
	kv("DND", pairString(wr.DND))
	kv("Away", pairString(wr.Away))
	kv("TeamsExpiration", formatDuration(wr.Expiration))
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
