package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/presencebridge/presencebridge/internal/config"
)

const configUsage = `Usage: presencebridge [--config PATH] config set [--if-set] Section.Key=Value ...

Sets keys in Presence.ini in place, keeping its comments, e.g.
  presencebridge config set Account.main.TenantID=contoso.onmicrosoft.com Account.main.Auth=secret Account.main.ClientSecret=...
ClientSecret, [SIP] Password, [Proxy] Password and [HTTP] Header.* values are
written encrypted, e.g.
  presencebridge config set 'Proxy.Username=CORP\svc-presence' Proxy.Password=...
Nothing is written if the result would not load. --if-set skips pairs with an
empty value (the MSI passes its silent-install properties this way).
`

func cmdConfig(g globals, args []string) int {
	if len(args) == 0 || args[0] != "set" {
		fmt.Fprint(g.stderr, configUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("config set", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	fs.Usage = func() { fmt.Fprint(g.stderr, configUsage) }
	ifSet := fs.Bool("if-set", false, "skip Key=Value pairs whose value is empty")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	var settings []config.Setting
	for _, kv := range fs.Args() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			fmt.Fprintf(g.stderr, "presencebridge config set: %q is not Section.Key=Value\n", kv)
			return exitUsage
		}
		if *ifSet && v == "" {
			continue
		}
		settings = append(settings, config.Setting{Key: strings.TrimSpace(k), Value: v})
	}
	if len(settings) == 0 {
		if *ifSet {
			return exitOK // nothing given: the shipped file stays as it is
		}
		fmt.Fprint(g.stderr, configUsage)
		return exitUsage
	}
	if err := config.Set(g.configPath, settings); err != nil {
		fmt.Fprintf(g.stderr, "presencebridge config set: %v\n", err)
		return exitConfig
	}
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.Key
	}
	fmt.Fprintf(g.stdout, "%s: set %s\n", g.configPath, strings.Join(names, ", "))
	return exitOK
}
