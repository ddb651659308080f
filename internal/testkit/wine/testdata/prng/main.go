// Command prng is the Windows program the wine harness's own tests run: Go's
// runtime reads ProcessPrng before main, so reaching main proves the stand-in
// DLL works. It prints 16 random bytes in hex, then acts on its arguments:
// "exit N" exits with N, "sleep" sleeps until killed.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(hex.EncodeToString(b))
	if len(os.Args) == 3 && os.Args[1] == "exit" {
		n, _ := strconv.Atoi(os.Args[2])
		os.Exit(n)
	}
	if len(os.Args) == 2 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
	}
}
