package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	npmMu   sync.Mutex
	npmDone = map[string]error{}
)

// npmInstall installs the Node packages a test's script uses, exactly as
// dir's package-lock.json pins them (npm ci), once per run and only if
// they are not there yet. Tests that need them never skip: CI installs
// Node.js and npm (.ci/run), and the npm registry is reachable.
func npmInstall(tb testing.TB, dir string) {
	tb.Helper()
	npmMu.Lock()
	defer npmMu.Unlock()
	err, done := npmDone[dir]
	if !done {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); statErr != nil {
			cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--prefix", dir)
			out, runErr := cmd.CombinedOutput()
			if runErr != nil {
				err = &npmError{dir: dir, out: string(out), err: runErr}
			}
		}
		npmDone[dir] = err
	}
	if err != nil {
		tb.Fatal(err)
	}
}

type npmError struct {
	dir, out string
	err      error
}

func (e *npmError) Error() string {
	return "npm ci --prefix " + e.dir + ": " + e.err.Error() + "\n" + e.out
}
