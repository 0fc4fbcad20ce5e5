package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestCLI runs the scripts in testdata/script against one real server; each
// script gets a tenant of its own, through SANDPOOL_URL and SANDPOOL_API_KEY
// as a user would set them.
func TestCLI(t *testing.T) {
	s := startServer(t, "")
	registry := testImages(t)
	var n atomic.Int32
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			tenant := fmt.Sprintf("script%d", n.Add(1))
			k, err := s.client("").CreateKey(context.Background(), tenant, false)
			if err != nil {
				return err
			}
			env.Setenv("PATH", filepath.Dir(binary)+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("SANDPOOL_URL", s.url)
			env.Setenv("SANDPOOL_API_KEY", k.Secret)
			env.Setenv("SANDPOOL_ADMIN_KEY", s.adminKey)
			env.Setenv("SANDPOOL_DATA", s.data)
			env.Setenv("REGISTRY", registry)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// capture VAR: set VAR to the last command's stdout, trimmed.
			"capture": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: capture VAR")
				}
				ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
			},
		},
	})
}
