package runtime

import (
	"crypto/rand"
	"encoding/base32"

	"github.com/google/uuid"
)

var b32 = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewID makes a sandbox id: "sb_" and 26 base32 characters of a UUIDv7,
// so ids sort by creation time and cannot be guessed.
func NewID() string {
	u, err := uuid.NewV7()
	if err != nil {
		_, _ = rand.Read(u[:]) // crypto/rand does not fail on Linux
	}
	return "sb_" + b32.EncodeToString(u[:])
}

// RandomSuffix is 8 base32 characters from crypto/rand.
func RandomSuffix() string {
	var b [5]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return b32.EncodeToString(b[:])
}
