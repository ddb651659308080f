package config

import (
	"strings"
	"time"
)

// Defaults of Presence.ini; Presence.ini.example documents the same values.
const (
	DefaultWinningTechnology  = WinningSipSimple
	DefaultStateFile          = "presencebridge.db" // beside the INI
	DefaultUsersFile          = "users.csv"         // beside the INI
	DefaultControlAddr        = "127.0.0.1:8399"
	DefaultMetricsAddr        = "127.0.0.1:9464"
	DefaultSecretWarnDays     = 30
	DefaultLoginURL           = "https://login.microsoftonline.com"
	DefaultGraphURL           = "https://graph.microsoft.com/v1.0"
	DefaultBudgetRequests     = 1500 // getPresencesByUserId: 1,500 requests / 30 s per app per tenant (Graph throttling limits page)
	DefaultBudgetWindow       = 30 * time.Second
	DefaultBudgetSharePercent = 60
)

// Legacy keys sit at the top of the file, before any section, as the vendors'
// guides write them (e.g. Imagicle's Presence.ini).
const (
	keyTeamsEnable       = "MSTeamsPresence.Enable"
	keyWinningTechnology = "RichPresence.WinningTechnology"
)

// knownSections are the section names, canonical spelling, in file order;
// "Account" stands for [Account.<id>].
var knownSections = []string{"General", "Microsoft", "Proxy", "Polling", "Account", "SIP", "HTTP", "Asterisk", "Delivery", "Mapping", "PBX"}

// knownKeys lists every key by lower-case section name ("" for the top of the file,
// "account" for every [Account.<id>]), canonical spelling, in documentation order.
var knownKeys = map[string][]string{
	"":          {keyTeamsEnable, keyWinningTechnology},
	"general":   {"StateFile", "UsersFile", "LogLevel", "LogFormat", "LogFile", "ControlAddr", "MetricsAddr", "SecretWarnDays", "EmitAllOnStart"},
	"microsoft": {"Cloud", "LoginURL", "GraphURL"},
	"proxy":     {"URL", "Username", "Password", "CAFile"},
	"polling":   {"Interval", "MinInterval", "BudgetRequests", "BudgetWindow", "BudgetShare", "RequestTimeout", "ResolveInterval", "ResolveRate"},
	"account": {"TenantID", "ClientID", "Auth", "ClientSecret", "CertificateFile", "CertificateKeyFile",
		"Username", "Domains", "LoginURL", "GraphURL", "BudgetRequests", "BudgetWindow", "BudgetShare"},
	"sip": {"Server", "Event", "Transport", "OutboundProxy", "From", "Username", "Password", "CAFile", "ServerName",
		"Expires", "Concurrency", "Rate", "Timeout"},
	// Header.<Name> keys are open (see freeKey).
	"http":     {"URL", "Batch", "CAFile", "ClientCertFile", "ClientKeyFile", "Timeout", "Concurrency"},
	"asterisk": {"Mode", "URL", "Username", "Password", "CAFile", "Address", "Secret", "Device", "Timeout", "Concurrency"},
	"delivery": {"RetryMin", "RetryMax", "BatchSize", "StaleAfter", "ReassertRate", "ProbeInterval"},
	// Every [Mapping] key is a rule (see freeKey).
	"mapping": {},
	"pbx":     {"Watch", "SubscribeExpires", "SubscribeRate", "Listen", "WatchURI", "InCall", "Ringing", "DND", "Away", "TeamsExpiration"},
}

// knownKeyIDs maps the lower-case name of every key in knownKeys to its
// canonical spelling, by the same section kinds.
var knownKeyIDs = func() map[string]map[string]string {
	ids := map[string]map[string]string{}
	for kind, keys := range knownKeys {
		ids[kind] = map[string]string{}
		for _, k := range keys {
			ids[kind][strings.ToLower(k)] = k
		}
	}
	return ids
}()
