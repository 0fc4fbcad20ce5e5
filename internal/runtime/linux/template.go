package linux

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/runtime"
)

// A template is a directory under <data>/templates/<name>: rootfs/ (the
// read-only lower layer, owned by the sandbox id range) and meta.json.
// The built-in "base" is generated on the host: a small /etc of its own and
// mount points for the host's /usr, /bin, /lib* (bound read-only at boot).

const baseTemplate = "base"

// baseVersion changes whenever the generated base layout changes; an older
// base is regenerated at Open.
const baseVersion = "4"

var templateName = pattern.New(`^[a-z0-9][a-z0-9._-]*$`, 1, 63)

type templateMeta struct {
	Name      string    `json:"name"`
	BuiltIn   bool      `json:"built_in"`
	Version   string    `json:"version,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	SizeBytes int64     `json:"size_bytes"`
	Origin    string    `json:"origin,omitempty"`
	// Layers, for a template made of layers kept elsewhere (an image's,
	// in the image store), are their directories, lowest first; such a
	// template has no rootfs/ of its own.
	Layers   []string         `json:"layers,omitempty"`
	Defaults runtime.Defaults `json:"defaults,omitzero"`
}

// templateInfo is what booting a sandbox needs of its template.
type templateInfo struct {
	lower    []string // read-only layers, top first (overlayfs order)
	binds    []bindMount
	defaults runtime.Defaults
}

// bindMount is a host path bound read-only into every sandbox of a template.
type bindMount struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	File bool   `json:"file,omitempty"`
}

func (r *Runtime) templateDir(name string) string {
	return filepath.Join(r.cfg.DataDir, "templates", name)
}

// hostBinds is what base exposes from the host, read-only: /usr, any of
// /bin, /sbin, /lib* that is a real directory (on merged-/usr hosts they are
// symlinks, recreated in the skeleton), and the few /etc entries programs
// under /usr need (alternatives symlinks, the loader cache, CA certificates).
func hostBinds() (binds []bindMount, links map[string]string) {
	links = map[string]string{}
	binds = append(binds, bindMount{Src: "/usr", Dst: "/usr"})
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		st, err := os.Lstat(d)
		if err != nil {
			continue
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			if target, err := os.Readlink(d); err == nil {
				links[d] = target
			}
			continue
		}
		if st.IsDir() {
			binds = append(binds, bindMount{Src: d, Dst: d})
		}
	}
	for _, e := range []string{"/etc/alternatives", "/etc/ssl", "/etc/ld.so.conf.d", "/etc/ld.so.cache", "/etc/ld.so.conf"} {
		st, err := os.Stat(e)
		if err != nil {
			continue
		}
		binds = append(binds, bindMount{Src: e, Dst: e, File: !st.IsDir()})
	}
	return binds, links
}

// ensureBase (re)generates the base template if missing or outdated.
func (r *Runtime) ensureBase() error {
	dir := r.templateDir(baseTemplate)
	var meta templateMeta
	if b, err := os.ReadFile(filepath.Join(dir, "meta.json")); err == nil &&
		json.Unmarshal(b, &meta) == nil && meta.Version == baseVersion {
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".base-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // after a successful rename this is gone already
	root := filepath.Join(tmp, "rootfs")
	if err := r.writeBaseSkeleton(root); err != nil {
		return fmt.Errorf("generate base template: %w", err)
	}
	meta = templateMeta{Name: baseTemplate, BuiltIn: true, Version: baseVersion, CreatedAt: time.Now().UTC()}
	if err := writeJSON(filepath.Join(tmp, "meta.json"), meta); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func (r *Runtime) writeBaseSkeleton(root string) error {
	binds, links := hostBinds()
	uid := int(r.cfg.UIDBase)
	type entry struct {
		path  string
		mode  os.FileMode
		owner int // sandbox uid
		data  string
		link  string
		dir   bool
	}
	entries := []entry{
		{path: "/", mode: 0o755, dir: true},
		{path: "/etc", mode: 0o755, dir: true},
		{path: "/home", mode: 0o755, dir: true},
		{path: "/home/user", mode: 0o750, owner: 1000, dir: true},
		{path: "/root", mode: 0o700, dir: true},
		{path: "/tmp", mode: os.ModeSticky | 0o777, dir: true},
		{path: "/var", mode: 0o755, dir: true},
		{path: "/var/tmp", mode: os.ModeSticky | 0o777, dir: true},
		{path: "/var/log", mode: 0o755, dir: true},
		{path: "/run", mode: 0o755, dir: true},
		{path: "/mnt", mode: 0o755, dir: true},
		{path: "/opt", mode: 0o755, dir: true},
		{path: "/srv", mode: 0o755, dir: true},
		{path: "/proc", mode: 0o555, dir: true},
		{path: "/dev", mode: 0o755, dir: true},
		{path: "/sys", mode: 0o555, dir: true},
		{path: "/etc/passwd", mode: 0o644, data: "root:x:0:0:root:/root:/bin/sh\n" +
			"user:x:1000:1000:sandbox user:/home/user:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
		{path: "/etc/group", mode: 0o644, data: "root:x:0:\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n"},
		{path: "/etc/hosts", mode: 0o644, data: "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		{path: "/etc/hostname", mode: 0o644, data: "sandbox\n"},
		// The gateway answers DNS as the sandbox's policy allows (every
		// query to port 53 reaches it, whatever the address).
		{path: "/etc/resolv.conf", mode: 0o644, data: "nameserver " + r.gateway() + "\n"},
		{path: "/etc/nsswitch.conf", mode: 0o644, data: "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"},
		{path: "/etc/shells", mode: 0o644, data: "/bin/sh\n/bin/bash\n/usr/bin/sh\n/usr/bin/bash\n"},
		{path: "/etc/os-release", link: "../usr/lib/os-release"},
		{path: "/etc/localtime", link: "/usr/share/zoneinfo/Etc/UTC"},
		{path: "/etc/mtab", link: "../proc/self/mounts"},
	}
	for _, b := range binds {
		if b.File {
			entries = append(entries, entry{path: b.Dst, mode: 0o644})
		} else {
			entries = append(entries, entry{path: b.Dst, mode: 0o755, dir: true})
		}
	}
	linkNames := make([]string, 0, len(links))
	for l := range links {
		linkNames = append(linkNames, l)
	}
	sort.Strings(linkNames)
	for _, l := range linkNames {
		entries = append(entries, entry{path: l, link: links[l]})
	}
	for _, e := range entries {
		p := filepath.Join(root, e.path)
		var err error
		switch {
		case e.link != "":
			err = os.Symlink(e.link, p)
		case e.dir:
			if err = os.MkdirAll(p, e.mode); err == nil {
				err = os.Chmod(p, e.mode)
			}
		default:
			err = os.WriteFile(p, []byte(e.data), e.mode)
		}
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid+e.owner, uid+e.owner); err != nil {
			return err
		}
	}
	return nil
}

// templateLayers returns the lower layers (top first) and the binds of a
// template, or ErrNotFound.
func (r *Runtime) templateLayers(name string) ([]string, []bindMount, error) {
	t, err := r.template(name)
	return t.lower, t.binds, err
}

// template looks a template up. What its meta.json says is kept in
// memory (templates do not change; a delete forgets it), so a create
// costs one stat of it.
func (r *Runtime) template(name string) (templateInfo, error) {
	if !templateName.MatchString(name) {
		return templateInfo{}, errdefs.Userf(errdefs.ErrInvalid, "invalid template name %q", name)
	}
	dir := r.templateDir(name)
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); err != nil {
		return templateInfo{}, errdefs.Userf(errdefs.ErrNotFound, "no template %q", name)
	}
	r.tplMu.Lock()
	t, ok := r.tpls[name]
	r.tplMu.Unlock()
	if ok {
		return t, nil
	}
	var meta templateMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil {
		return templateInfo{}, fmt.Errorf("template %s: %w", name, err)
	}
	switch {
	case name == baseTemplate:
		t.lower = []string{filepath.Join(dir, "rootfs")}
		t.binds, _ = hostBinds()
	case len(meta.Layers) > 0:
		for _, l := range meta.Layers {
			if st, err := os.Stat(l); err != nil || !st.IsDir() {
				return templateInfo{}, fmt.Errorf("template %s: layer %s is missing", name, l)
			}
		}
		t.lower = slices.Clone(meta.Layers)
		slices.Reverse(t.lower)
	default:
		t.lower = []string{filepath.Join(dir, "rootfs")}
	}
	t.defaults = meta.Defaults
	r.tplMu.Lock()
	r.tpls[name] = t
	r.tplMu.Unlock()
	return t, nil
}

// forgetTemplate drops what template remembers of name.
func (r *Runtime) forgetTemplate(name string) {
	r.tplMu.Lock()
	delete(r.tpls, name)
	r.tplMu.Unlock()
}

// Templates lists the templates.
func (r *Runtime) Templates(ctx context.Context) ([]runtime.Template, error) {
	ents, err := os.ReadDir(filepath.Join(r.cfg.DataDir, "templates"))
	if err != nil {
		return nil, err
	}
	var out []runtime.Template
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		var meta templateMeta
		b, err := os.ReadFile(filepath.Join(r.templateDir(e.Name()), "meta.json"))
		if err != nil || json.Unmarshal(b, &meta) != nil {
			continue // an import in progress or broken: not usable
		}
		layers := len(meta.Layers)
		if layers == 0 {
			layers = 1
		}
		out = append(out, runtime.Template{Name: meta.Name, BuiltIn: meta.BuiltIn, CreatedAt: meta.CreatedAt, SizeBytes: meta.SizeBytes,
			Origin: meta.Origin, Layers: layers, Defaults: meta.Defaults})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteTemplate removes a template that no sandbox uses.
func (r *Runtime) DeleteTemplate(ctx context.Context, name string) error {
	if _, _, err := r.templateLayers(name); err != nil {
		return err
	}
	if name == baseTemplate {
		return errdefs.Userf(errdefs.ErrInvalid, "the built-in template %q cannot be deleted", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sb := range r.sandboxes {
		if sb.st.Template == name {
			return errdefs.Userf(errdefs.ErrConflict, "template %q is used by sandbox %s", name, sb.st.ID)
		}
	}
	// Rename first so a half-deleted template is never listed.
	gone := filepath.Join(r.cfg.DataDir, "templates", ".deleted-"+name+"-"+ids.Suffix())
	if err := os.Rename(r.templateDir(name), gone); err != nil {
		return err
	}
	r.forgetTemplate(name)
	return os.RemoveAll(gone)
}

// sweepTemplates removes what an interrupted import or delete left in the
// templates directory (names starting with "."; never listed or used).
func (r *Runtime) sweepTemplates() error {
	root := filepath.Join(r.cfg.DataDir, "templates")
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".import-") || strings.HasPrefix(e.Name(), ".deleted-") || strings.HasPrefix(e.Name(), ".base-") {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
