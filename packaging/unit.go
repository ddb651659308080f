package packaging

import (
	"bytes"
	"strings"
	"text/template"
)

// UnitParams fill the systemd unit.
type UnitParams struct {
	Binary, Config string
	User           string // empty: root
	StateDir       string
	LogDir         string // empty: no log file outside the state folder
}

// unitTemplate is the hardened unit the DEB ships (deb/presencebridge.service, kept
// equal to Unit(DebUnit) by a test) and `presencebridge service install` writes.
// Type=notify: systemctl start returns once the configuration is read and the state
// file open, and fails (exit 3, no restart) when Presence.ini is broken.
var unitTemplate = template.Must(template.New("unit").Funcs(template.FuncMap{"q": systemdQuote}).Parse(`[Unit]
Description=presencebridge: Microsoft Teams presence for the PBX
Documentation=file:///usr/share/doc/presencebridge/README.md
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
{{- if .User}}
User={{.User}}
Group={{.User}}
{{- end}}
ExecStart={{q .Binary}} --config {{q .Config}} run
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
# 3: Presence.ini or the users file is invalid; restarting cannot fix that.
RestartPreventExitStatus=3
TimeoutStopSec=30s
{{- if eq .StateDir "/var/lib/presencebridge"}}
StateDirectory=presencebridge
StateDirectoryMode=0700
{{- end}}
{{- if eq .LogDir "/var/log/presencebridge"}}
LogsDirectory=presencebridge
LogsDirectoryMode=0700
{{- end}}
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={{q .StateDir}}{{if .LogDir}} {{q .LogDir}}{{end}}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
# What a Go network daemon calls; the rest fails with EPERM instead of killing it.
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
RemoveIPC=yes
PrivateMounts=yes
ProtectProc=invisible
ProcSubset=pid
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
`))

// systemdQuote quotes a path for a unit file when it holds spaces.
func systemdQuote(s string) string {
	if strings.ContainsAny(s, " \t\"\\") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return s
}

// Unit is the systemd unit for p.
func Unit(p UnitParams) string {
	var b bytes.Buffer
	if err := unitTemplate.Execute(&b, p); err != nil {
		panic(err) // the template and its fields are fixed
	}
	return b.String()
}

// DebUnit is the DEB's unit: the binary in /usr/bin, the INI in /etc, state in
// /var/lib and a log folder in /var/log, as the presencebridge account.
var DebUnit = UnitParams{
	Binary:   "/usr/bin/presencebridge",
	Config:   "/etc/presencebridge/Presence.ini",
	User:     "presencebridge",
	StateDir: "/var/lib/presencebridge",
	LogDir:   "/var/log/presencebridge",
}
