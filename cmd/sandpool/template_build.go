package main

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) templateBuild() *cobra.Command {
	var (
		file string
		args []string
		opts client.BuildOptions
		nf   networkFlags
	)
	cmd := &cobra.Command{
		Use:   "build NAME [-f Dockerfile] [CONTEXT]",
		Short: "Build a template from a Dockerfile (admin)",
		Long: `Build a template from a Dockerfile (admin).

CONTEXT (default: the current directory) is sent to the server as a tar
archive, less what its .dockerignore excludes; -f names the Dockerfile
(default: CONTEXT/Dockerfile). Supported: FROM (an image, or a template made
from one), RUN (shell and exec forms, each in a fresh sandbox with the
--egress policy, else the server's default), COPY and ADD of context files (--chown, --chmod), ENV, ARG,
WORKDIR, USER, LABEL, CMD, ENTRYPOINT and SHELL; anything else is refused
with its line. Each step is a layer; a step whose inputs did not change since
an earlier build comes from the cache, as with docker build. The build's
output is shown as it runs; a RUN that fails refuses the template with its
output, and leaves nothing behind.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: act(c, func(ctx context.Context, cl *client.Client, a []string) (*client.Template, error) {
			dir := "."
			if len(a) == 2 {
				dir = a[1]
			}
			var err error
			if opts.Args, err = parseKV("build-arg", args); err != nil {
				return nil, err
			}
			if opts.Network, err = nf.network(); err != nil {
				return nil, err
			}
			pr, pw := io.Pipe()
			extra, name, err := dockerfileEntry(dir, file)
			if err != nil {
				return nil, err
			}
			opts.Dockerfile = name
			keep := name
			if keep == "" {
				keep = "Dockerfile"
			}
			go func() { pw.CloseWithError(writeContext(pw, dir, keep, extra)) }()
			defer pr.Close() // stops the writer if the call ends first
			fmt.Fprintf(c.stderr, "sandpool: building %s from %s\n", a[0], dir)
			return cl.BuildTemplate(ctx, a[0], pr, opts, newPullPrinter(c.stderr))
		}, func(t *client.Template) error { return c.line(t.Name) }),
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the Dockerfile (default: CONTEXT/Dockerfile)")
	f.StringArrayVar(&args, "build-arg", nil, "a build argument, NAME=VALUE (repeatable)")
	f.BoolVar(&opts.NoCache, "no-cache", false, "run every step, whatever the cache has")
	f.StringVar(&opts.Platform, "platform", "", "os/arch[/variant] of the images FROM pulls (default: the server's)")
	nf.add(f, "the RUN steps and the setup")
	f.StringVar(&opts.Setup, "setup", "", "shell script run as root once per sandbox of the template, before it is ready")
	f.StringVar(&opts.SessionSetup, "session-setup", "", "shell script run as root before each session")
	f.StringVar(&opts.SessionTeardown, "session-teardown", "", "shell script run as root after each session")
	f.BoolVar(&opts.Build, "build", false, "also run the setup once now")
	return cmd
}

// dockerfileEntry says where the Dockerfile is in the context sent: its
// path there if it is inside dir, else a file to add under a name of its
// own (as docker build does).
func dockerfileEntry(dir, file string) (extra *contextFile, name string, err error) {
	if file == "" {
		return nil, "", nil // the server's default, CONTEXT/Dockerfile
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	absFile, err := filepath.Abs(file)
	if err != nil {
		return nil, "", err
	}
	if rel, err := filepath.Rel(absDir, absFile); err == nil && filepath.IsLocal(rel) {
		return nil, filepath.ToSlash(rel), nil
	}
	b, err := os.ReadFile(absFile)
	if err != nil {
		return nil, "", err
	}
	var r [6]byte
	_, _ = rand.Read(r[:]) // crypto/rand does not fail on Linux
	name = ".dockerfile." + hex.EncodeToString(r[:])
	return &contextFile{name: name, data: b}, name, nil
}

type contextFile struct {
	name string
	data []byte
}

// writeContext writes dir as an uncompressed tar to w, leaving out what
// dir/.dockerignore excludes (never the Dockerfile, keep, or .dockerignore
// itself), with extra added. Owners are left out: COPY sets them.
func writeContext(w io.Writer, dir, keep string, extra *contextFile) error {
	ignore, err := readDockerignore(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return err
	}
	if len(ignore) > 0 {
		for _, k := range []string{keep, ".dockerignore"} {
			ignore = append(ignore, ignoreRule{re: regexp.MustCompile("^" + regexp.QuoteMeta(k) + "$"), raw: k})
		}
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignore.excludes(rel) {
			if d.IsDir() && !ignore.mayInclude(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil // a socket or the like: nothing to send
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.Format = tar.FormatPAX
		if !fi.Mode().IsRegular() {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if extra != nil {
		if err := tw.WriteHeader(&tar.Header{Name: extra.name, Mode: 0o644, Size: int64(len(extra.data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(extra.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// dockerignore is a .dockerignore: patterns in order, the last that
// matches a path deciding; "!" makes a pattern an exception. A pattern
// matches a path or any directory above it; "*" and "?" stay within one
// name, "**" spans any number of them.
type dockerignore []ignoreRule

type ignoreRule struct {
	re      *regexp.Regexp
	exclude bool
	raw     string
}

func readDockerignore(p string) (dockerignore, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rules dockerignore
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{exclude: true}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			r.exclude, line = false, strings.TrimSpace(rest)
		}
		line = strings.TrimPrefix(path.Clean("/"+line), "/")
		r.raw = line
		if r.re, err = patternRE(line); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", p, line, err)
		}
		rules = append(rules, r)
	}
	return rules, sc.Err()
}

// patternRE turns a .dockerignore pattern into a regexp that matches a
// slash path it covers, or one under it.
func patternRE(pat string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; c {
		case '*':
			if i+1 < len(pat) && pat[i+1] == '*' {
				i++
				if i+1 < len(pat) && pat[i+1] == '/' {
					i++
					b.WriteString("(.*/)?")
				} else {
					b.WriteString(".*")
				}
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		case '\\':
			if i+1 < len(pat) {
				i++
				b.WriteString(regexp.QuoteMeta(string(pat[i])))
			}
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("(/.*)?$")
	return regexp.Compile(b.String())
}

// excludes says whether rel is left out of the context.
func (d dockerignore) excludes(rel string) bool {
	out := false
	for _, r := range d {
		if r.re.MatchString(rel) {
			out = r.exclude
		}
	}
	return out
}

// mayInclude says whether an exception could bring back something under
// the excluded directory rel, which must then be walked.
func (d dockerignore) mayInclude(rel string) bool {
	for _, r := range d {
		if !r.exclude && (strings.HasPrefix(r.raw, rel+"/") || strings.ContainsAny(r.raw, "*?")) {
			return true
		}
	}
	return false
}
