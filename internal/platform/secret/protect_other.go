//go:build !windows

package secret

func protect(plain []byte, keyFile string) ([]byte, error)    { return aesSeal(plain, keyFile) }
func unprotect(sealed []byte, keyFile string) ([]byte, error) { return aesOpen(sealed, keyFile) }
