package e2b

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"

	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// Sandbox ids: on the E2B surface a sandbox is its sandpool id without the
// "sb_" prefix (lower-case base32, so it matches what the SDKs allow and
// what host names can carry: [a-z0-9]+).
const idPrefix = "sb_"

var e2bID = pattern.New(`^[a-z0-9]+$`, 1, 64)

// toE2B is a sandpool sandbox id as the E2B API shows it.
func toE2B(id string) string { return strings.TrimPrefix(id, idPrefix) }

// fromE2B is the sandpool id of an E2B sandbox id; ok false if it cannot
// be one.
func fromE2B(id string) (string, bool) {
	if !e2bID.MatchString(id) {
		return "", false
	}
	return idPrefix + id, true
}

// tenantOf authenticates a control-plane request: the API key in
// X-API-KEY (as the SDKs send it) or Authorization: Bearer. Keys are
// sandpool's own: a tenant's sandboxes are the same through both APIs.
func (s *Server) tenantOf(r *http.Request) (string, error) {
	secret := strings.TrimSpace(r.Header.Get("X-API-KEY"))
	if secret == "" {
		secret, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		secret = strings.TrimSpace(secret)
	}
	if secret == "" {
		return "", fmt.Errorf("%w: send an API key in X-API-KEY", errUnauthorized)
	}
	k, err := s.keys.Authenticate(r.Context(), secret)
	if errors.Is(err, keys.ErrUnknown) {
		return "", fmt.Errorf("%w: unknown or revoked API key", errUnauthorized)
	}
	if err != nil {
		return "", err
	}
	return k.Tenant, nil
}

// accessToken is a sandbox's envd access token: an HMAC of its id and its
// session count under the cluster's secret. Every node can check it
// without storing it, and a pool sandbox's token changes with each session,
// so whoever held it before cannot reach the next caller's.
func (s *Server) accessToken(sb sandbox.Sandbox) string {
	mac := hmac.New(sha256.New, []byte(s.cfg.Secret))
	fmt.Fprintf(mac, "e2b-envd\x00%s\x00%d", sb.ID, sb.Uses)
	return hex.EncodeToString(mac.Sum(nil))
}

// tokenOK compares a presented token with the sandbox's in constant time.
func (s *Server) tokenOK(sb sandbox.Sandbox, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.accessToken(sb))) == 1
}

// authorizeSandbox checks that r may reach sb through envd or a port: it
// carries the sandbox's access token (X-Access-Token, or the
// E2B-Traffic-Access-Token the code interpreter sends), a valid /files
// signature made with it, or an API key of the sandbox's tenant. Knowing a
// sandbox's id is never enough.
func (s *Server) authorizeSandbox(r *http.Request, sb sandbox.Sandbox) error {
	for _, h := range []string{"X-Access-Token", "E2B-Traffic-Access-Token"} {
		if s.tokenOK(sb, r.Header.Get(h)) {
			return nil
		}
	}
	if r.URL.Path == "/files" && r.URL.Query().Has("signature") {
		return s.checkSignature(r, sb)
	}
	if key := strings.TrimSpace(r.Header.Get("X-API-KEY")); key != "" {
		k, err := s.keys.Authenticate(r.Context(), key)
		if err == nil && k.Tenant == sb.Tenant {
			return nil
		}
		if err != nil && !errors.Is(err, keys.ErrUnknown) {
			return err
		}
	}
	return fmt.Errorf("%w: send the sandbox's access token (X-Access-Token)", errUnauthorized)
}

// checkSignature checks a signed /files URL, as the SDKs make them
// (uploadUrl, downloadUrl): signature = "v1_" + base64(sha256(
// "<path>:<read|write>:<username>:<token>[:<expiry>]")), and the expiry
// (Unix seconds), if given, not passed.
func (s *Server) checkSignature(r *http.Request, sb sandbox.Sandbox) error {
	q := r.URL.Query()
	op := "read"
	if r.Method == http.MethodPost {
		op = "write"
	}
	msg := q.Get("path") + ":" + op + ":" + q.Get("username") + ":" + s.accessToken(sb)
	if exp := q.Get("signature_expiration"); exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: signature_expiration %q", errUnauthorized, exp)
		}
		if time.Now().Unix() > n {
			return fmt.Errorf("%w: the signature has expired", errUnauthorized)
		}
		msg += ":" + exp
	}
	sum := sha256.Sum256([]byte(msg))
	want := "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(q.Get("signature")), []byte(want)) != 1 {
		return fmt.Errorf("%w: bad signature", errUnauthorized)
	}
	return nil
}

// target is the sandbox an envd or port request is for, once routed and
// authorized.
type target struct {
	sb   sandbox.Sandbox
	port int
}

type targetKey struct{}

func withTarget(ctx context.Context, t target) context.Context {
	return context.WithValue(ctx, targetKey{}, t)
}

func targetOf(ctx context.Context) target {
	t, _ := ctx.Value(targetKey{}).(target) // set by the router before any envd handler runs
	return t
}
