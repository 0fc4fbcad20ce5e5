package dockerfile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/image"
)

// Templates finds sandpool templates for FROM; a FROM whose name is not a
// template is pulled as an image reference.
type Templates interface {
	// Template returns template name's image with its layers held in
	// lease, or ok false if there is no such template.
	Template(ctx context.Context, name string, lease *image.Lease) (img image.Image, ok bool, err error)
}

// Builder builds Dockerfiles into images of a Store.
type Builder struct {
	Store  *image.Store
	Runner Runner
	// Templates may be nil: FROM then only names images.
	Templates Templates
	// Pull says how FROM images are pulled: platform, credentials,
	// limits, progress.
	Pull image.Options
}

// Options for one build.
type Options struct {
	// Context is the build context directory that COPY and ADD read; it
	// is read with every path confined to it (see ExtractContext for an
	// uploaded one).
	Context string
	// Args are the --build-arg values.
	Args map[string]string
	// Output receives the build's progress and the RUN steps' output.
	Output io.Writer
	// NoCache runs every step.
	NoCache bool
	// MaxLayerBytes bounds each layer a step makes; 0 means
	// image.DefaultMaxBytes.
	MaxLayerBytes int64
}

// Result is a finished build.
type Result struct {
	// Image is the built image: its layers, lowest first, are held in
	// the lease Build was given; Commit it under the template's name.
	Image image.Image
	// Steps report what each instruction did.
	Steps []Step
}

// Step reports one instruction of a build.
type Step struct {
	Line int
	// Instruction as run, variables substituted.
	Instruction string
	// Cached: the step's result came from the cache.
	Cached bool
	// Layer is the diffID of the layer it added, if any.
	Layer string
}

// maxLayers is overlayfs's limit on lower layers.
const maxLayers = 500

// defaultPath is the PATH RUN gets when the image sets none, as Docker.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// state is the image as the build has made it so far.
type state struct {
	layers  []image.Layer
	config  image.Config
	args    map[string]*string // declared in the stage; nil value: declared, unset
	globals map[string]string  // ARGs before FROM
	shell   []string
	key     string // cache key of the chain so far
	escape  rune
	// cmdFromBase: CMD came from the base image (ENTRYPOINT resets it).
	cmdFromBase bool
}

func (st *state) stack() image.Stack {
	dirs := make([]string, len(st.layers))
	for i, l := range st.layers {
		dirs[i] = l.Dir
	}
	return dirs
}

// lookup finds a variable in the stage: ENV first, then ARG.
func (st *state) lookup(name string) (string, bool) {
	if v, ok := image.Getenv(st.config.Env, name); ok {
		return v, true
	}
	if v, ok := st.args[name]; ok && v != nil {
		return *v, true
	}
	return "", false
}

func (st *state) lex() lexer { return lexer{escape: st.escape, lookup: st.lookup} }

// chain extends the cache key with parts.
func (st *state) chain(parts ...any) string {
	h := sha256.New()
	b, _ := json.Marshal(append([]any{st.key}, parts...)) // plain values: cannot fail
	h.Write(b)
	st.key = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return st.key
}

// Build runs df's instructions. The layers of the result are held in
// lease; on error, nothing this build stored is left behind (except what
// another owner or lease uses).
func (b *Builder) Build(ctx context.Context, lease *image.Lease, df *Dockerfile, opts Options) (Result, error) {
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	mine := b.Store.Lease()
	res, err := b.build(ctx, mine, df, opts, out)
	if err == nil {
		for _, l := range res.Image.Layers {
			if _, err = b.Store.Hold(lease, l.DiffID); err != nil {
				break
			}
		}
	}
	if err != nil {
		// Whatever the build touched that nothing else uses goes: the
		// steps' layers and a base pulled for it.
		b.Store.Discard(mine, mine.Held())
		return Result{}, err
	}
	mine.Release()
	return res, nil
}

func (b *Builder) build(ctx context.Context, lease *image.Lease, df *Dockerfile, opts Options, out io.Writer) (Result, error) {
	st := &state{
		args: map[string]*string{}, globals: map[string]string{},
		shell: []string{"/bin/sh", "-c"}, escape: df.Escape,
	}
	var res Result
	total := len(df.Instructions)
	for n, in := range df.Instructions {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		fmt.Fprintf(out, "Step %d/%d : %s\n", n+1, total, in.Original)
		step, err := b.step(ctx, lease, st, in, opts, out)
		if err != nil {
			var de *Error
			if errors.As(err, &de) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return Result{}, err
			}
			var ie *image.Error
			if errors.As(err, &ie) {
				return Result{}, &Error{Line: in.Line, Instruction: in.Cmd, Msg: ie.Msg, Kind: ie.Kind}
			}
			return Result{}, fmt.Errorf("Dockerfile line %d: %s: %w", in.Line, in.Cmd, err)
		}
		step.Line = in.Line
		switch {
		case step.Cached:
			fmt.Fprintf(out, " ---> Using cache %s\n", short(step.Layer))
		case step.Layer != "":
			fmt.Fprintf(out, " ---> %s\n", short(step.Layer))
		}
		res.Steps = append(res.Steps, step)
		if len(st.layers) > maxLayers {
			return Result{}, errorf(in.Line, in.Cmd, "more than %d layers: overlayfs cannot stack them", maxLayers)
		}
	}
	img := image.Image{Layers: st.layers, Config: st.config, CreatedAt: time.Now().UTC()}
	for _, l := range st.layers {
		img.Size += l.Size
	}
	res.Image = img
	return res, nil
}

func short(diffID string) string {
	s := strings.TrimPrefix(diffID, "sha256:")
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

// step runs one instruction against st.
func (b *Builder) step(ctx context.Context, lease *image.Lease, st *state, in Instruction, opts Options, out io.Writer) (Step, error) {
	lx := st.lex()
	raw := ""
	if !in.JSON {
		raw = in.Args[0]
	}
	bad := func(format string, args ...any) error { return errorf(in.Line, in.Cmd, format, args...) }
	switch in.Cmd {
	case "ARG":
		words, _ := rawWords(raw, st.escape) // checked by Parse
		var done []string
		for _, w := range words {
			name, def, hasDef := strings.Cut(w, "=")
			if hasDef {
				var err error
				lookup := st.lookup
				if st.key == "" {
					lookup = func(n string) (string, bool) { v, ok := st.globals[n]; return v, ok }
				}
				if def, err = (lexer{escape: st.escape, lookup: lookup}).word(def); err != nil {
					return Step{}, bad("%v", err)
				}
			}
			var val *string
			switch {
			case opts.Args != nil && hasKey(opts.Args, name):
				v := opts.Args[name]
				val = &v
			case hasDef:
				val = &def
			default:
				if v, ok := st.globals[name]; ok && st.key != "" {
					val = &v // a global's default, redeclared in the stage
				}
			}
			if st.key == "" { // before FROM
				if val != nil {
					st.globals[name] = *val
				} else {
					st.globals[name] = ""
				}
			} else {
				st.args[name] = val
			}
			if val != nil {
				done = append(done, name+"="+*val)
			} else {
				done = append(done, name)
			}
		}
		if st.key != "" {
			st.chain("ARG", done)
		}
		return Step{Instruction: "ARG " + strings.Join(done, " ")}, nil

	case "FROM":
		words, _ := rawWords(raw, st.escape)
		glx := lexer{escape: st.escape, lookup: func(n string) (string, bool) { v, ok := st.globals[n]; return v, ok }}
		ref, err := glx.word(words[0])
		if err != nil {
			return Step{}, bad("%v", err)
		}
		platform, _ := in.Flag("platform")
		if platform, err = glx.word(platform); err != nil {
			return Step{}, bad("%v", err)
		}
		if err := b.from(ctx, lease, st, ref, platform); err != nil {
			return Step{}, err
		}
		return Step{Instruction: "FROM " + ref}, nil

	case "ENV", "LABEL":
		pairs, err := nameValues(in.Cmd, raw, lx)
		if err != nil {
			return Step{}, bad("%v", err)
		}
		var done []string
		for _, kv := range pairs {
			if in.Cmd == "ENV" {
				st.config.Env = image.Setenv(st.config.Env, kv[0], kv[1])
			} else {
				if st.config.Labels == nil {
					st.config.Labels = map[string]string{}
				}
				st.config.Labels[kv[0]] = kv[1]
			}
			done = append(done, kv[0]+"="+kv[1])
		}
		st.chain(in.Cmd, done)
		return Step{Instruction: in.Cmd + " " + strings.Join(done, " ")}, nil

	case "USER":
		u, err := lx.word(strings.TrimSpace(raw))
		if err != nil {
			return Step{}, bad("%v", err)
		}
		uid, gid, err := image.ResolveUser(st.stack(), u)
		if err != nil {
			return Step{}, err
		}
		st.config.User, st.config.UID, st.config.GID = u, uid, gid
		st.chain("USER", u)
		return Step{Instruction: "USER " + u}, nil

	case "CMD", "ENTRYPOINT", "SHELL":
		argv := in.Args
		if !in.JSON {
			argv = append(slices.Clone(st.shell), raw)
		}
		switch in.Cmd {
		case "CMD":
			st.config.Cmd, st.cmdFromBase = argv, false
		case "ENTRYPOINT":
			st.config.Entrypoint = argv
			if st.cmdFromBase {
				st.config.Cmd, st.cmdFromBase = nil, false
			}
		case "SHELL":
			st.shell = argv
		}
		st.chain(in.Cmd, argv)
		b, _ := json.Marshal(argv)
		return Step{Instruction: in.Cmd + " " + string(b)}, nil

	case "WORKDIR":
		dir, err := lx.word(strings.TrimSpace(raw))
		if err != nil {
			return Step{}, bad("%v", err)
		}
		if !path.IsAbs(dir) {
			base := st.config.WorkingDir
			if base == "" {
				base = "/"
			}
			dir = path.Join(base, dir)
		}
		dir = path.Clean(dir)
		st.config.WorkingDir = dir
		return b.workdir(ctx, lease, st, dir, opts)

	case "RUN":
		return b.run(ctx, lease, st, in, opts, out)

	case "COPY", "ADD":
		return b.copy(ctx, lease, st, in, opts)
	}
	return Step{}, bad("not supported")
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// nameValues parses ENV and LABEL arguments. Every value is expanded with
// the variables as they were before the instruction, as Docker does.
func nameValues(cmd, raw string, lx lexer) ([][2]string, error) {
	words, err := rawWords(raw, lx.escape)
	if err != nil {
		return nil, err
	}
	if cmd == "ENV" && !strings.Contains(words[0], "=") {
		// Legacy form: ENV name value with spaces.
		name, err := lx.word(words[0])
		if err != nil {
			return nil, err
		}
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(raw), words[0]))
		v, err := lx.word(rest)
		if err != nil {
			return nil, err
		}
		return [][2]string{{name, v}}, nil
	}
	var out [][2]string
	for _, w := range words {
		kv, err := lx.word(w)
		if err != nil {
			return nil, err
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not name=value", w)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// from sets st to the base image: a template, an image pulled, or
// nothing for scratch.
func (b *Builder) from(ctx context.Context, lease *image.Lease, st *state, ref, platform string) error {
	var img image.Image
	switch {
	case ref == "scratch":
	case b.Templates != nil && !strings.ContainsAny(ref, "/:@"):
		t, ok, err := b.Templates.Template(ctx, ref, lease)
		if err != nil {
			return err
		}
		if ok {
			img = t
			break
		}
		fallthrough
	default:
		opts := b.Pull
		if platform != "" {
			opts.Platform = platform
		}
		var err error
		if img, err = b.Store.Pull(ctx, lease, image.Source{Ref: ref}, opts); err != nil {
			return err
		}
	}
	st.layers = slices.Clone(img.Layers)
	st.config = img.Config
	st.config.Env = slices.Clone(img.Config.Env)
	st.config.Labels = maps.Clone(img.Config.Labels)
	st.cmdFromBase = len(img.Config.Cmd) > 0
	ids := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		ids[i] = l.DiffID
	}
	st.key = ""
	st.chain("FROM", ids, img.Config)
	return nil
}

// cached looks key up unless the build asks for no cache; a hit's layer
// is held in lease.
func (b *Builder) cached(lease *image.Lease, key string, opts Options) (image.CacheEntry, bool) {
	if opts.NoCache {
		return image.CacheEntry{}, false
	}
	return b.Store.CacheGet(lease, key)
}

// addCached appends the layer of a cache hit to st.
func (b *Builder) addCached(lease *image.Lease, st *state, e image.CacheEntry, instr string) (Step, error) {
	s := Step{Instruction: instr, Cached: true, Layer: e.Layer}
	if e.Layer == "" {
		return s, nil
	}
	l, err := b.Store.Hold(lease, e.Layer)
	if err != nil {
		return Step{}, err
	}
	st.layers = append(st.layers, l)
	return s, nil
}
