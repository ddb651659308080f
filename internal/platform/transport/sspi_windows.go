package transport

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/alexbrainman/sspi"
	"golang.org/x/sys/windows"
)

// integratedAuth says whether a proxy's Negotiate or NTLM challenge can be
// answered with the identity this process runs as when no credentials are
// configured: on Windows, with SSPI, as the service account (LocalSystem
// authenticates as the computer account, DOMAIN\HOST$).
const integratedAuth = true

// sspiSession is one NTLM or Negotiate handshake through SSPI with the
// credentials of the account this process runs as. It uses the root sspi
// package rather than sspi/ntlm, whose init panics when the NTLM package is
// missing (as under Wine without winbind), which would stop the service at
// start even without a proxy.
type sspiSession struct {
	cred     *sspi.Credentials
	ctx      *sspi.Context
	target   *uint16 // service principal HTTP/<proxy host>, for Negotiate (Kerberos)
	maxToken uint32
}

// newIntegratedSession starts scheme (NTLM or Negotiate) as the service
// account. Negotiate asks Kerberos for a ticket to HTTP/<proxyHost> and falls
// back to NTLM inside SPNEGO.
func newIntegratedSession(scheme, proxyHost string) (authSession, error) {
	pkg := sspi.NTLMSP_NAME
	var target *uint16
	if scheme == schemeNegotiate {
		pkg = sspi.NEGOSSP_NAME
		t, err := syscall.UTF16PtrFromString("HTTP/" + proxyHost)
		if err != nil {
			return nil, err
		}
		target = t
	}
	info, err := sspi.QueryPackageInfo(pkg)
	if err != nil {
		return nil, fmt.Errorf("Windows has no %s security package: %w", pkg, sspiError(err))
	}
	cred, err := sspi.AcquireCredentials("", pkg, sspi.SECPKG_CRED_OUTBOUND, nil)
	if err != nil {
		return nil, fmt.Errorf("Windows gave no %s credentials for %s: %w", pkg, serviceAccount(), sspiError(err))
	}
	return &sspiSession{cred: cred, ctx: sspi.NewClientContext(cred, sspi.ISC_REQ_CONNECTION), target: target, maxToken: info.MaxToken}, nil
}

// Step runs InitializeSecurityContext with the proxy's challenge (none the
// first time) and returns the token to send.
func (s *sspiSession) Step(challenge []byte) ([]byte, error) {
	var in [1]sspi.SecBuffer
	in[0].Set(sspi.SECBUFFER_TOKEN, challenge)
	inDesc := &sspi.SecBufferDesc{Version: sspi.SECBUFFER_VERSION, BuffersCount: 1, Buffers: &in[0]}
	if challenge == nil {
		inDesc = nil
	}
	buf := make([]byte, s.maxToken)
	var out [1]sspi.SecBuffer
	out[0].Set(sspi.SECBUFFER_TOKEN, buf)
	outDesc := &sspi.SecBufferDesc{Version: sspi.SECBUFFER_VERSION, BuffersCount: 1, Buffers: &out[0]}
	switch ret := s.ctx.Update(s.target, outDesc, inDesc); ret {
	case sspi.SEC_E_OK, sspi.SEC_I_CONTINUE_NEEDED:
	case sspi.SEC_I_COMPLETE_NEEDED, sspi.SEC_I_COMPLETE_AND_CONTINUE:
		if r := sspi.CompleteAuthToken(s.ctx.Handle, outDesc); r != sspi.SEC_E_OK {
			return nil, fmt.Errorf("CompleteAuthToken: %w", sspiError(r))
		}
	default:
		return nil, fmt.Errorf("InitializeSecurityContext: %w", sspiError(ret))
	}
	if out[0].BufferSize == 0 {
		return nil, errors.New("InitializeSecurityContext gave an empty token")
	}
	return buf[:out[0].BufferSize], nil
}

func (s *sspiSession) Close() {
	if s.ctx.Handle != nil {
		s.ctx.Release()
	}
	s.cred.Release()
}

var serviceAccountName = sync.OnceValue(func() string {
	n := uint32(128)
	for range 2 {
		b := make([]uint16, n)
		if err := windows.GetUserNameEx(windows.NameSamCompatible, &b[0], &n); err == nil {
			return windows.UTF16ToString(b[:n])
		}
	}
	return "(the service account)"
})

// serviceAccount names the account this process runs as (DOMAIN\user, or
// DOMAIN\HOST$ for LocalSystem), for messages.
func serviceAccount() string { return serviceAccountName() }

// sspiStatus names the SSPI status codes a field engineer is likely to meet
// (winerror.h); Windows has no message text for them, so syscall.Errno alone
// prints "winapi error #2148074245".
var sspiStatus = map[syscall.Errno]string{
	0x80090303: "SEC_E_TARGET_UNKNOWN: no Kerberos principal for the proxy's name",
	0x80090304: "SEC_E_INTERNAL_ERROR",
	0x80090305: "SEC_E_SECPKG_NOT_FOUND: the security package is not installed",
	0x80090308: "SEC_E_INVALID_TOKEN: the proxy's challenge is malformed",
	0x8009030C: "SEC_E_LOGON_DENIED",
	0x8009030E: "SEC_E_NO_CREDENTIALS: the account has no credentials for this package",
	0x80090311: "SEC_E_NO_AUTHENTICATING_AUTHORITY: no domain controller could be reached",
}

// sspiError turns an SSPI status into "0x80090305 SEC_E_SECPKG_NOT_FOUND: ...".
func sspiError(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	if name, ok := sspiStatus[errno]; ok {
		return fmt.Errorf("0x%08X %s", uint32(errno), name)
	}
	return fmt.Errorf("0x%08X %v", uint32(errno), err)
}
