package main

import (
	"bufio"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/presencebridge/presencebridge/internal/platform/secret"
)

func cmdSecret(g globals, args []string) int {
	fs := flag.NewFlagSet("secret", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	fs.Usage = func() {
		fmt.Fprintln(g.stderr, "Usage: presencebridge secret encrypt < secret.txt\n\nReads a secret (a client secret, the SIP password, an HTTP header value) from standard\ninput and prints the encrypted value to paste into Presence.ini. On Windows it is bound\nto this machine (DPAPI); elsewhere to the key file secret.key beside Presence.ini\n(created on first use, readable by its owner only).")
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || fs.Arg(0) != "encrypt" {
		fs.Usage()
		return exitUsage
	}
	if g.stdin == nil {
		return exitUsage
	}
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	plain := strings.TrimRight(line, "\r\n")
	if plain == "" {
		fmt.Fprintf(g.stderr, "presencebridge secret encrypt: no secret on standard input (%v)\n", err)
		return exitUsage
	}
	enc, err := secret.Encrypt(plain, filepath.Dir(g.configPath))
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge secret encrypt: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(g.stdout, enc)
	return exitOK
}
