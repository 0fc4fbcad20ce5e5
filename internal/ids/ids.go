// Package ids makes sandpool's identifiers: sortable by creation time where
// that helps, and never guessable.
package ids

import (
	"crypto/rand"
	"encoding/base32"

	"github.com/google/uuid"
)

// b32 is lower-case base32 without the letters easily misread (i, l, o, u).
var b32 = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// Sandbox makes a sandbox id: "sb_" and 26 base32 characters of a UUIDv7,
// so ids sort by creation time and cannot be guessed.
func Sandbox() string {
	u, err := uuid.NewV7()
	if err != nil {
		_, _ = rand.Read(u[:]) // crypto/rand does not fail on Linux
	}
	return "sb_" + b32.EncodeToString(u[:])
}

// Suffix is 8 base32 characters from crypto/rand.
func Suffix() string {
	var b [5]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return b32.EncodeToString(b[:])
}

// Random is n random bytes in base32 (for secrets and tokens).
func Random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand does not fail on Linux
	return b32.EncodeToString(b)
}
