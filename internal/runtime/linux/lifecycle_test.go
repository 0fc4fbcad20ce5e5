package linux_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

func TestCreateBadInput(t *testing.T) {
	dir := t.TempDir()
	r := openRuntimeAt(t, dir)
	ctx := context.Background()
	existing := createSandbox(t, r, runtime.Spec{Template: "base"})
	tests := []struct {
		name string
		spec runtime.Spec
		kind error
	}{
		{"unknown template", runtime.Spec{Template: "nope"}, errdefs.ErrNotFound},
		{"no template", runtime.Spec{}, errdefs.ErrInvalid},
		{"bad template name", runtime.Spec{Template: "../base"}, errdefs.ErrInvalid},
		{"bad id", runtime.Spec{Template: "base", ID: "../x"}, errdefs.ErrInvalid},
		{"duplicate id", runtime.Spec{Template: "base", ID: existing}, errdefs.ErrExists},
		{"negative memory", runtime.Spec{Template: "base", Limits: runtime.Limits{MemoryBytes: -1}}, errdefs.ErrInvalid},
		{"tiny memory", runtime.Spec{Template: "base", Limits: runtime.Limits{MemoryBytes: 1 << 20}}, errdefs.ErrInvalid},
		{"negative cpus", runtime.Spec{Template: "base", Limits: runtime.Limits{CPUs: -1}}, errdefs.ErrInvalid},
		{"huge cpus", runtime.Spec{Template: "base", Limits: runtime.Limits{CPUs: 1e6}}, errdefs.ErrInvalid},
		{"few pids", runtime.Spec{Template: "base", Limits: runtime.Limits{Pids: 2}}, errdefs.ErrInvalid},
		{"bad hostname", runtime.Spec{Template: "base", Hostname: "a/b"}, errdefs.ErrInvalid},
		{"disk limit", runtime.Spec{Template: "base", Limits: runtime.Limits{DiskBytes: 1 << 30}}, errdefs.ErrNotSupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Create(ctx, tc.spec)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("got %v, want %v", err, tc.kind)
			}
		})
	}
	list, _ := r.List(ctx)
	if len(list) != 1 {
		t.Fatalf("failed creates left sandboxes: %+v", list)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sandboxes"))
	if len(ents) != 1 {
		t.Fatalf("failed creates left directories: %v", ents)
	}
}

func TestFreezeThaw(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	sh(t, r, id, "echo kept > /tmp/f")
	p, err := r.Exec(ctx, id, proc.Spec{Shell: "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.01; done", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	time.Sleep(100 * time.Millisecond)
	if err := r.Freeze(ctx, id); err != nil {
		t.Fatal(err)
	}
	if info, _ := r.Get(ctx, id); info.Status != runtime.StatusFrozen {
		t.Fatalf("status %s", info.Status)
	}
	if err := r.Freeze(ctx, id); err != nil {
		t.Fatalf("freeze twice: %v", err)
	}
	if _, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"true"}}, proc.Stdio{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("exec while frozen: %v", err)
	}
	counter := func() string {
		b, err := os.ReadFile(filepath.Join(upperDir(t, r, id), "tmp", "counter"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := counter()
	time.Sleep(200 * time.Millisecond)
	if after := counter(); after != before {
		t.Fatalf("counter moved while frozen: %s -> %s", before, after)
	}
	if err := r.Thaw(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return counter() != before })
	if out := sh(t, r, id, "cat /tmp/f").Stdout; out != "kept\n" {
		t.Fatalf("after thaw: %q", out)
	}
}

func upperDir(t *testing.T, r *linux.Runtime, id string) string {
	t.Helper()
	return filepath.Join(r.DataDir(), "sandboxes", id, "upper")
}

func TestStopStartKeepsFiles(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	sh(t, r, id, "echo kept > /home/user/notes")
	run(t, r, id, proc.Spec{Shell: "rm /etc/hostname; mkdir -p /opt/x && touch /opt/x/y", User: "root"})
	if _, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"sleep", "600"}, Background: true}, proc.Stdio{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if info, _ := r.Get(ctx, id); info.Status != runtime.StatusStopped || info.Pid != 0 {
		t.Fatalf("after stop: %+v", info)
	}
	if _, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"true"}}, proc.Stdio{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("exec while stopped: %v", err)
	}
	if _, err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	res := sh(t, r, id, "cat /home/user/notes; test -e /etc/hostname || echo deleted; ls /opt/x; ps -eo args | grep -c '^sleep 600' || true")
	if res.Stdout != "kept\ndeleted\ny\n0\n" {
		t.Fatalf("after start: %q", res.Stdout)
	}
}

func TestSnapshot(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	sh(t, r, id, "echo hello > /home/user/a.txt")
	run(t, r, id, proc.Spec{Shell: "rm /etc/hosts; mkdir /srv/d", User: "root"})
	var buf bytes.Buffer
	if err := r.Snapshot(context.Background(), id, &buf); err != nil {
		t.Fatal(err)
	}
	seen := map[string]*tar.Header{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[hdr.Name] = hdr
		if hdr.Name == "home/user/a.txt" {
			b, _ := io.ReadAll(tr)
			if string(b) != "hello\n" || hdr.Uid != 1000 {
				t.Fatalf("a.txt: %q uid %d", b, hdr.Uid)
			}
		}
	}
	if seen["home/user/a.txt"] == nil || seen["srv/d/"] == nil {
		t.Fatalf("snapshot lacks written files: %v", keys(seen))
	}
	if h := seen["etc/hosts"]; h == nil || h.Typeflag != tar.TypeChar || h.Devmajor != 0 {
		t.Fatalf("deletion not kept as a whiteout: %+v", h)
	}
	// The sandbox runs on after the snapshot.
	if out := sh(t, r, id, "cat /home/user/a.txt").Stdout; out != "hello\n" {
		t.Fatalf("after snapshot: %q", out)
	}
}

func keys(m map[string]*tar.Header) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDestroyIdempotent(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	for i := 0; i < 2; i++ {
		if err := r.Destroy(ctx, id); err != nil {
			t.Fatalf("destroy #%d: %v", i+1, err)
		}
	}
	if err := r.Destroy(ctx, "sb_never_existed"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after destroy: %v", err)
	}
	// A frozen sandbox destroys too.
	id = createSandbox(t, r, runtime.Spec{Template: "base"})
	if err := r.Freeze(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := r.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// A sandbox outlives the process that created it, and a new process finds
// it in the data directory, processes and files intact.
func TestReattachFromNewProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	r := openRuntimeAt(t, dir)
	ctx := context.Background()
	info, err := r.Get(ctx, id)
	if err != nil || info.Status != runtime.StatusRunning {
		t.Fatalf("after reattach: %+v %v (helper said %q)", info, err, out)
	}
	if out := sh(t, r, id, "cat /home/user/mark; ps -eo args | grep -c '^sleep 999'").Stdout; out != "from helper\n1\n" {
		t.Fatalf("state after reattach: %q", out)
	}
	ps, err := r.Processes(ctx, id)
	if err != nil || len(ps) != 1 || !ps[0].Running {
		t.Fatalf("agent's process table: %+v %v", ps, err)
	}
	if err := r.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, dir, []string{id})
}

// helperEnv makes the test binary create a sandbox in the data directory
// it names, print its id and exit without destroying it.
const helperEnv = "SANDPOOL_TEST_CREATE_IN"

func runHelper(dir string) {
	r, err := linux.Open(linux.Config{DataDir: dir, CgroupParent: testCgroupParent})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	info, err := r.Create(ctx, runtime.Spec{Template: "base"})
	if err == nil {
		_, err = r.Files(info.ID).Write(ctx, "/home/user/mark", strings.NewReader("from helper\n"), fsys.WriteOptions{})
	}
	if err == nil {
		var p proc.Process
		p, err = r.Exec(ctx, info.ID, proc.Spec{Cmd: []string{"sleep", "999"}, Background: true}, proc.Stdio{})
		if err == nil {
			p.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(info.ID)
	os.Exit(0)
}

func TestImportTemplate(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()

	// A tiny root filesystem: the host's /usr is not there, so the
	// template ships a static busybox-free world: just a file and a
	// link. Sandboxes from it run the agent, which needs nothing.
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "etc", "motd"), []byte("custom template\n"), 0o644))
	must(t, os.Symlink("/etc/motd", filepath.Join(src, "motd-link")))
	if _, err := r.ImportTemplate(ctx, "tiny", runtime.TemplateSource{Dir: src}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ImportTemplate(ctx, "tiny", runtime.TemplateSource{Dir: src}); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("import twice: %v", err)
	}
	id := createSandbox(t, r, runtime.Spec{Template: "tiny"})
	rc, _, err := r.Files(id).Read(ctx, "/motd-link", fsys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "custom template\n" {
		t.Fatalf("read through the template: %q", b)
	}
	st, err := r.Files(id).Stat(ctx, "/home/user", fsys.Options{})
	if err != nil || st.Owner != 1000 {
		t.Fatalf("user home in imported template: %+v %v", st, err)
	}
	if err := r.DeleteTemplate(ctx, "tiny"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("delete template in use: %v", err)
	}
	must(t, r.Destroy(ctx, id))
	must(t, r.DeleteTemplate(ctx, "tiny"))
	if err := r.DeleteTemplate(ctx, "base"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("delete base: %v", err)
	}

	// From a tar archive made of the base sandbox's snapshot style.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	writeTar(t, tw, &tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	writeTar(t, tw, &tar.Header{Name: "etc/hello", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3}, "hi\n")
	writeTar(t, tw, &tar.Header{Name: "etc/hardlink", Typeflag: tar.TypeLink, Linkname: "etc/hello"})
	tw.Close()
	if _, err := r.ImportTemplate(ctx, "fromtar", runtime.TemplateSource{Tar: &buf}); err != nil {
		t.Fatal(err)
	}
	tpls, _ := r.Templates(ctx)
	if len(tpls) != 2 || tpls[0].Name != "base" || !tpls[0].BuiltIn || tpls[1].Name != "fromtar" {
		t.Fatalf("templates: %+v", tpls)
	}
}

// A hostile archive cannot write outside the template.
func TestImportTemplateHostileTar(t *testing.T) {
	r := openRuntime(t)
	ctx := context.Background()
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")

	cases := map[string][]*tar.Header{
		"dotdot":        {{Name: "../../../../../../" + victim, Typeflag: tar.TypeReg, Size: 4}},
		"symlink dir":   {{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: outside}, {Name: "escape/victim", Typeflag: tar.TypeReg, Size: 4}},
		"symlink file":  {{Name: "f", Typeflag: tar.TypeSymlink, Linkname: victim}, {Name: "f", Typeflag: tar.TypeReg, Size: 4}},
		"etc is a link": {{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: outside}},
	}
	for name, hdrs := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range hdrs {
				h.Mode = 0o644
				if h.Typeflag == tar.TypeReg {
					writeTar(t, tw, h, "pwnd")
				} else {
					writeTar(t, tw, h)
				}
			}
			tw.Close()
			_, _ = r.ImportTemplate(ctx, "hostile-"+strings.ReplaceAll(name, " ", "-"), runtime.TemplateSource{Tar: &buf})
			ents, _ := os.ReadDir(outside)
			if len(ents) != 0 {
				t.Fatalf("archive wrote outside the template: %v", ents)
			}
		})
	}
}

func writeTar(t *testing.T, tw *tar.Writer, h *tar.Header, body ...string) {
	t.Helper()
	must(t, tw.WriteHeader(h))
	for _, b := range body {
		if _, err := tw.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A server killed in the middle of adopting a spare leaves the spare's
// cgroup name in the controllers its rename had not reached yet, with
// the PID 1 in them; the next runtime on the data directory removes
// them all and kills what is inside.
func TestHalfRenamedSpareGroupIsSwept(t *testing.T) {
	dir := t.TempDir()
	name := linux.SpareTag(dir) + "-halfway"
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	var dirs []string
	for _, c := range []string{"memory", "pids", "freezer"} { // "cpu" renamed already
		d := filepath.Join("/sys/fs/cgroup", c, linuxtest.CgroupParent, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(d) })
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	linuxtest.OpenAt(t, dir)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the half-adopted spare's process was not killed")
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s left", d)
		}
	}
}
