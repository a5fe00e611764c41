package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/imaged/imaged/internal/api"
)

// cmdToken makes an API bearer token: the token is printed once, the config keeps its SHA-256.
func cmdToken(args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "token", "new")
	if err != nil {
		return err
	}
	fs := newFlags("token "+sub, stderr)
	scope := fs.String("scope", "read", "read, operate (reimage, reboot, power, promote) or admin (also import, delete, prune)")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"usage: imaged token new [-scope read|operate|admin] NAME"}
	}
	if _, err := api.ParseScope(*scope); err != nil {
		return usageError{err.Error()}
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	tok := "imaged_" + base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(tok))
	fmt.Fprintf(stdout, "token (shown once; give it to %s, keep it secret):\n  %s\n", fs.Arg(0), tok)
	fmt.Fprintf(stdout, "add to the config under api.tokens (only the hash is stored):\n  - {name: %s, scope: %s, sha256: %s}\n", fs.Arg(0), *scope, hex.EncodeToString(sum[:]))
	return nil
}
