//go:build !linux

package wine

import "errors"

func serverDirName(string) (string, error) { return "", errors.New("wine: Linux only") }
