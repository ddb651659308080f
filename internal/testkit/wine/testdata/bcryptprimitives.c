/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Go programs under
 * Wine 8 in presencebridge's tests only (never shipped, never in the MSI).
 *
 * Go 1.22 and later read random bytes at start from ProcessPrng in
 * bcryptprimitives.dll (Windows 10 and later); Wine 8 has no such DLL, so any Go
 * program dies before main ("bcryptprimitives.dll not found"). This one exports
 * ProcessPrng on top of RtlGenRandom (SystemFunction036 in advapi32), which Wine
 * has. The harness in internal/testkit/wine builds it with Debian's x86_64-w64-mingw32-gcc
 * and copies it into the test prefix's system32.
 *
 * ProcessPrng: BOOL WINAPI ProcessPrng(PBYTE pbData, SIZE_T cbData); always TRUE
 * on Windows. RtlGenRandom takes a ULONG length, hence the loop.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		len -= n;
	}
	return TRUE;
}
