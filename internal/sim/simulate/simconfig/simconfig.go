// Package simconfig writes the Presence.ini, users.csv and CA file that point
// presencebridge at a simulated tenant (graphsim): the one writer behind
// `presencebridge simulate --write-config` and the tests' testkit.WriteSimConfig.
// It needs nothing but graphsim, so test harnesses can import it without pulling
// in what the simulate command runs (the CTI receiver, Kamailio).
package simconfig

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

// CAFileName is the tenant's CA certificate as Write writes it into Options.Dir,
// beside Presence.ini and users.csv.
const CAFileName = "sim-ca.pem"

const (
	configFileName = "Presence.ini"
	usersFileName  = "users.csv"
	stateFileName  = "presencebridge.db" // named when Options.NameFiles
)

// The sign-ins of the account Write writes by default (Options.Auth).
const (
	AuthSecret     = "secret"     // client credentials: the tenant's daemon app and its secret
	AuthDeviceCode = "devicecode" // a service account through the tenant's public app
)

// SecretAccountID is the second account Write writes for Options.SecretUsers.
const SecretAccountID = "app"

// deviceCodeUsername is the service account a device-code account signs in as:
// the one the tenant approves device codes for by default (its DeviceCodeUPN).
const deviceCodeUsername = graphsim.DefaultDeviceCodeUser + "@" + graphsim.DefaultDomain

// Options is what Write writes besides what the tenant itself gives
// (its URLs, its tenant id, its CA and its users). Empty fields are left out, so
// the product's defaults apply, unless said otherwise.
type Options struct {
	// Dir is the folder for Presence.ini, users.csv and sim-ca.pem; it must exist.
	Dir string
	// Comment, when set, is the first line ("; " + Comment).
	Comment string
	// WinningTechnology, when set, goes above the first section with
	// MSTeamsPresence.Enable = 1: the legacy keys as the vendors' guides spell them.
	WinningTechnology string
	// NameFiles spells out [General] StateFile and UsersFile, which are then
	// presencebridge.db and users.csv beside Presence.ini (their defaults too).
	NameFiles bool
	// ControlAddr and MetricsAddr go into [General] ("off" turns an endpoint off).
	ControlAddr, MetricsAddr string
	// Interval and ResolveRate go into [Polling].
	Interval    time.Duration
	ResolveRate float64
	// Accounts are the [Account.*] sections, written as given. When empty,
	// Write writes one account, [Account.<AccountID>] (default "main"), for
	// the tenant that signs in as Auth says: AuthSecret (the default) as the
	// daemon app with ClientSecret (as Presence.ini holds it, e.g. encrypted;
	// default the daemon app's secret in clear), AuthDeviceCode as a service
	// account through the public app.
	Accounts     string
	AccountID    string
	Auth         string
	ClientSecret string
	// SecretUsers, with Auth = AuthDeviceCode and Accounts empty, has the first
	// SecretUsers users served by a second account, [Account.app]
	// (SecretAccountID), that signs in as the daemon app with its client secret,
	// and the others by the device-code account; users.csv then names each
	// user's account. A device-code account can read presence but cannot write
	// it for other users (setPresence needs the application permission
	// Presence.ReadWrite.All), so only the calls of these users can show in Teams.
	SecretUsers int
	// HTTPURL is the [HTTP] target's URL and SIPServer the [SIP] target's server.
	HTTPURL, SIPServer string
	// PBXWatch, when set, is [PBX] Watch (e.g. "dialog": the PBX's calls shown
	// in Teams); it needs SIPServer.
	PBXWatch string
	// Extra goes last, as given: more sections ([Delivery], [Mapping], ...).
	Extra string
}

// Write writes what a field engineer would write to point presencebridge at
// the running simulated tenant sim into o.Dir: the tenant's CA as sim-ca.pem,
// users.csv listing every simulated user (see WriteUsers) and Presence.ini,
// which reaches the tenant directly (no proxy) trusting only sim-ca.pem. It
// returns the path of Presence.ini.
func Write(sim *graphsim.Server, o Options) (string, error) {
	if o.Auth == "" {
		o.Auth = AuthSecret
	}
	if o.Auth != AuthSecret && o.Auth != AuthDeviceCode {
		return "", fmt.Errorf("simulated tenant's Presence.ini: Auth %q: use %s or %s", o.Auth, AuthSecret, AuthDeviceCode)
	}
	if o.SecretUsers < 0 || o.SecretUsers > 0 && (o.Auth != AuthDeviceCode || o.Accounts != "") {
		return "", fmt.Errorf("simulated tenant's Presence.ini: SecretUsers %d: a number of users, 0 or more, for a second account beside a device-code account (Auth %s, no Accounts)", o.SecretUsers, AuthDeviceCode)
	}
	if o.PBXWatch != "" && o.SIPServer == "" {
		return "", fmt.Errorf("simulated tenant's Presence.ini: PBXWatch %q needs SIPServer (the PBX to watch)", o.PBXWatch)
	}
	if err := os.WriteFile(filepath.Join(o.Dir, CAFileName), sim.CAPEM(), 0o644); err != nil {
		return "", err
	}
	var accountOf []string // each user's account, when the users file names it
	if o.SecretUsers > 0 {
		if o.AccountID == "" {
			o.AccountID = "main"
		}
		for i := range sim.Users() {
			accountOf = append(accountOf, o.AccountID)
			if i < o.SecretUsers {
				accountOf[i] = SecretAccountID
			}
		}
	}
	if err := writeUsers(o.Dir, sim.Users(), accountOf); err != nil {
		return "", err
	}
	var ini strings.Builder
	// section writes text (lines ending in "\n") with a blank line before it,
	// except at the top of the file.
	section := func(text string) {
		if text == "" {
			return
		}
		if ini.Len() > 0 {
			ini.WriteString("\n")
		}
		ini.WriteString(text)
		if !strings.HasSuffix(text, "\n") {
			ini.WriteString("\n")
		}
	}
	var top strings.Builder
	if o.Comment != "" {
		fmt.Fprintf(&top, "; %s\n", o.Comment)
	}
	if o.WinningTechnology != "" {
		fmt.Fprintf(&top, "MSTeamsPresence.Enable = 1\nRichPresence.WinningTechnology = %s\n", o.WinningTechnology)
	}
	section(top.String())

	general := "[General]\n"
	if o.NameFiles {
		general += "StateFile = " + stateFileName + "\nUsersFile = " + usersFileName + "\n"
	}
	for _, kv := range [][2]string{{"ControlAddr", o.ControlAddr}, {"MetricsAddr", o.MetricsAddr}} {
		if kv[1] != "" {
			general += kv[0] + " = " + kv[1] + "\n"
		}
	}
	section(general)
	section(fmt.Sprintf("[Microsoft]\nLoginURL = %s\nGraphURL = %s\n", sim.URL(), sim.GraphURL()))
	section("[Proxy]\nURL = direct\nCAFile = " + CAFileName + "\n")
	if o.Interval != 0 || o.ResolveRate != 0 {
		polling := "[Polling]\n"
		if o.Interval != 0 {
			polling += fmt.Sprintf("Interval = %s\n", o.Interval)
		}
		if o.ResolveRate != 0 {
			polling += fmt.Sprintf("ResolveRate = %g\n", o.ResolveRate)
		}
		section(polling)
	}
	if o.Accounts == "" {
		if o.AccountID == "" {
			o.AccountID = "main"
		}
		o.Accounts = fmt.Sprintf("[Account.%s]\nTenantID = %s\n", o.AccountID, sim.TenantID())
		if o.Auth == AuthDeviceCode {
			o.Accounts += fmt.Sprintf("ClientID = %s\nAuth = devicecode\nUsername = %s\n", graphsim.DefaultPublicApp, deviceCodeUsername)
		} else {
			if o.ClientSecret == "" {
				o.ClientSecret = graphsim.DefaultDaemonSecret
			}
			o.Accounts += fmt.Sprintf("ClientID = %s\nAuth = secret\nClientSecret = %s\n", graphsim.DefaultDaemonApp, o.ClientSecret)
		}
		if o.SecretUsers > 0 {
			section(o.Accounts)
			o.Accounts = fmt.Sprintf("[Account.%s]\nTenantID = %s\nClientID = %s\nAuth = secret\nClientSecret = %s\n",
				SecretAccountID, sim.TenantID(), graphsim.DefaultDaemonApp, cmp.Or(o.ClientSecret, graphsim.DefaultDaemonSecret))
		}
	}
	section(o.Accounts)
	if o.HTTPURL != "" {
		section("[HTTP]\nURL = " + o.HTTPURL + "\n")
	}
	if o.SIPServer != "" {
		section("[SIP]\nServer = " + o.SIPServer + "\n")
	}
	if o.PBXWatch != "" {
		section("[PBX]\nWatch = " + o.PBXWatch + "\n")
	}
	section(o.Extra)
	path := filepath.Join(o.Dir, configFileName)
	if err := os.WriteFile(path, []byte(ini.String()), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// WriteUsers writes dir/users.csv listing us as a PBX export would (semicolons,
// CRLF): UPN, SIP URI sip:<1000+i>@pbx.example, extension 1000+i and the display
// name of the i-th user.
func WriteUsers(dir string, us []graphsim.User) error {
	return writeUsers(dir, us, nil)
}

// writeUsers is WriteUsers with an Account column when accountOf (the i-th
// user's account) is given.
func writeUsers(dir string, us []graphsim.User, accountOf []string) error {
	var csv strings.Builder
	csv.WriteString("UPN;SIP URI;Extension;Name")
	if accountOf != nil {
		csv.WriteString(";Account")
	}
	csv.WriteString("\r\n")
	for i, u := range us {
		fmt.Fprintf(&csv, "%s;%s;%d;%s", u.UPN, SIPURI(i), 1000+i, u.DisplayName)
		if accountOf != nil {
			csv.WriteString(";" + accountOf[i])
		}
		csv.WriteString("\r\n")
	}
	return os.WriteFile(filepath.Join(dir, usersFileName), []byte(csv.String()), 0o644)
}

// SIPURI is the SIP URI users.csv gives the i-th simulated user (from 0):
// sip:<1000+i>@pbx.example, the PBX's domain in package kamailio too.
func SIPURI(i int) string { return fmt.Sprintf("sip:%d@%s", 1000+i, PBXDomain) }

// PBXDomain is the domain of the users' SIP URIs.
const PBXDomain = "pbx.example"
