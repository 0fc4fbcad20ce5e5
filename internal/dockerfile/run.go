package dockerfile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/sandpool/sandpool/internal/image"
)

// Runner runs the command of a RUN step in a fresh sandbox whose root is
// the given layers under an empty writable layer, and hands back that
// writable layer. The runtime's implementation makes a real sandbox (with
// the template's network policy); localrun has one for tests and tools.
type Runner interface {
	Run(ctx context.Context, step RunStep) (RunResult, error)
}

// RunStep is what a Runner runs.
type RunStep struct {
	// Layers are the overlayfs lower dirs, lowest first.
	Layers []string
	// Env is the complete environment, KEY=VALUE.
	Env []string
	// User is the USER in force as written; UID and GID are what it
	// resolved to in the image.
	User     string
	UID, GID int
	// Workdir is the working directory (created if missing); "/" if none.
	Workdir string
	// Cmd is the argv; Cmd[0] is looked up in Env's PATH.
	Cmd []string
	// Output receives stdout and stderr.
	Output io.Writer
}

// RunResult is a finished RUN.
type RunResult struct {
	// UpperDir is the sandbox's writable layer (an overlayfs upper dir,
	// owners shifted into the sandbox range as the store's layers are).
	UpperDir string
	// Release removes what the run left (the sandbox, its upper dir); the
	// builder calls it once it has stored the layer.
	Release func()
}

// ExitError is a RUN command that ran and failed.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit code %d", e.Code) }

func (b *Builder) run(ctx context.Context, lease *image.Lease, st *state, in Instruction, opts Options, out io.Writer) (Step, error) {
	argv := in.Args
	if !in.JSON {
		argv = append(slices.Clone(st.shell), in.Args[0])
	}
	if len(argv) == 0 {
		return Step{}, errorf(in.Line, in.Cmd, "requires a command")
	}
	env := slices.Clone(st.config.Env)
	for _, name := range slices.Sorted(maps.Keys(st.args)) {
		if v := st.args[name]; v != nil {
			if _, set := image.Getenv(env, name); !set {
				env = append(env, name+"="+*v)
			}
		}
	}
	if _, ok := image.Getenv(env, "PATH"); !ok {
		env = append(env, "PATH="+defaultPath)
	}
	workdir := st.config.WorkingDir
	if workdir == "" {
		workdir = "/"
	}
	cmdJSON, _ := json.Marshal(argv)
	instr := "RUN " + string(cmdJSON)
	key := st.chain("RUN", argv, env, st.config.User, workdir)
	if e, ok := b.cached(lease, key, opts); ok {
		return b.addCached(lease, st, e, instr)
	}
	if b.Runner == nil {
		return Step{}, errorf(in.Line, in.Cmd, "this builder cannot run commands")
	}
	tail := &tailBuffer{max: 8 << 10}
	res, err := b.Runner.Run(ctx, RunStep{
		Layers: st.stack(), Env: env, User: st.config.User, UID: st.config.UID, GID: st.config.GID,
		Workdir: workdir, Cmd: argv, Output: io.MultiWriter(out, tail),
	})
	if err != nil {
		if res.Release != nil {
			res.Release()
		}
		var ee *ExitError
		if errors.As(err, &ee) {
			return Step{}, &Error{Line: in.Line, Instruction: in.Cmd, Kind: ErrRunFailed,
				Msg: fmt.Sprintf("%s failed with exit code %d; output:\n%s", string(cmdJSON), ee.Code, tail.String())}
		}
		return Step{}, fmt.Errorf("run %s: %w", cmdJSON, err)
	}
	defer res.Release()
	l, err := b.Store.AddUpperDir(ctx, lease, res.UpperDir, opts.MaxLayerBytes)
	if err != nil {
		return Step{}, err
	}
	if err := b.Store.CachePut(key, image.CacheEntry{Layer: l.DiffID}); err != nil {
		return Step{}, err
	}
	st.layers = append(st.layers, l)
	return Step{Instruction: instr, Layer: l.DiffID}, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return t.buf.String() }
