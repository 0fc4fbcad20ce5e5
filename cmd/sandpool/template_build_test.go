package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The context sent for a build leaves out what .dockerignore says, keeps
// its exceptions, the Dockerfile and .dockerignore, and adds a Dockerfile
// from outside under a name of its own.
func TestWriteContext(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		".dockerignore":           "# comment\nnode_modules\n*.log\n**/secret*\n!keep.log\nbuild/\ndocker/\n",
		"Dockerfile":              "FROM x",
		"app.go":                  "package app",
		"debug.log":               "x",
		"keep.log":                "x",
		"node_modules/a/index.js": "x",
		"src/secret.txt":          "x",
		"src/deep/secret-2":       "x",
		"src/main.go":             "x",
		"build/out":               "x",
		"docker/Dockerfile.dev":   "FROM y",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list := func(keep string, extra *contextFile) []string {
		var buf bytes.Buffer
		if err := writeContext(&buf, dir, keep, extra); err != nil {
			t.Fatal(err)
		}
		var names []string
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
			}
			if h.Typeflag == tar.TypeReg {
				names = append(names, h.Name)
			}
		}
		slices.Sort(names)
		return names
	}
	want := []string{".dockerignore", "Dockerfile", "app.go", "keep.log", "src/main.go"}
	if diff := cmp.Diff(want, list("Dockerfile", nil)); diff != "" {
		t.Errorf("context (-want +got):\n%s", diff)
	}
	// A Dockerfile in an ignored directory is sent all the same.
	if got := list("docker/Dockerfile.dev", nil); !slices.Contains(got, "docker/Dockerfile.dev") || slices.Contains(got, "build/out") {
		t.Errorf("with -f docker/Dockerfile.dev: %v", got)
	}
	// One from outside the context comes under a name of its own.
	outside := filepath.Join(t.TempDir(), "Dockerfile.other")
	if err := os.WriteFile(outside, []byte("FROM z"), 0o644); err != nil {
		t.Fatal(err)
	}
	extra, name, err := dockerfileEntry(dir, outside)
	if err != nil || extra == nil {
		t.Fatalf("dockerfileEntry: %v %v", extra, err)
	}
	if got := list(name, extra); !slices.Contains(got, name) {
		t.Errorf("outside Dockerfile as %s: %v", name, got)
	}
	if _, name, _ := dockerfileEntry(dir, filepath.Join(dir, "docker/Dockerfile.dev")); name != "docker/Dockerfile.dev" {
		t.Errorf("a Dockerfile inside the context is named %q", name)
	}
}

// FuzzDockerignore: any .dockerignore is read without a panic, and a
// pattern naming a plain path excludes that path.
func FuzzDockerignore(f *testing.F) {
	for _, s := range []string{"node_modules\n!keep", "**/*.log", "a/**/b?c", `\*x`, "[", "!", "../x"} {
		f.Add(s, "a/b/c.log")
	}
	f.Fuzz(func(t *testing.T, file, rel string) {
		p := filepath.Join(t.TempDir(), ".dockerignore")
		if err := os.WriteFile(p, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := readDockerignore(p)
		if err != nil {
			return
		}
		_ = d.excludes(rel)
		_ = d.mayInclude(rel)
	})
}

func TestDockerignorePatterns(t *testing.T) {
	for _, c := range []struct {
		pattern, path string
		match         bool
	}{
		{"node_modules", "node_modules", true},
		{"node_modules", "node_modules/a/b.js", true},
		{"node_modules", "src/node_modules", false},
		{"*.log", "a.log", true},
		{"*.log", "dir/a.log", false},
		{"**/*.log", "dir/sub/a.log", true},
		{"**/*.log", "a.log", true},
		{"dir/*/x", "dir/a/x", true},
		{"dir/*/x", "dir/a/b/x", false},
		{"a?c", "abc", true},
		{"a?c", "a/c", false},
		{"/build/", "build/out", true},
	} {
		re, err := patternRE(strings.TrimPrefix(path.Clean("/"+c.pattern), "/"))
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		if got := re.MatchString(c.path); got != c.match {
			t.Errorf("%q matches %q: %v, want %v", c.pattern, c.path, got, c.match)
		}
	}
}
