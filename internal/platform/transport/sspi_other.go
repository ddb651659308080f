//go:build !windows

package transport

import "errors"

// integratedAuth says whether a proxy's Negotiate or NTLM challenge can be
// answered with the identity this process runs as (Windows SSPI) when no
// credentials are configured. Elsewhere it cannot.
const integratedAuth = false

func newIntegratedSession(scheme, proxyHost string) (authSession, error) {
	return nil, errors.New("integrated authentication (the service account's identity) exists on Windows only; put the credentials in [Proxy] Username and Password")
}

// serviceAccount names the account this process runs as, for messages.
func serviceAccount() string { return "" }
