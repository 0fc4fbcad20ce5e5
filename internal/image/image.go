package image

import (
	"slices"
	"time"
)

// Image is an image in the store: what an owner record holds and what
// Pull returns.
type Image struct {
	// Owner it is recorded under, once committed.
	Owner string `json:"owner,omitempty"`
	// Source it came from; empty for a build.
	Source Source `json:"source"`
	// Digest of its manifest; empty for a build.
	Digest   string `json:"digest,omitempty"`
	Platform string `json:"platform,omitempty"`
	// Layers, lowest first.
	Layers []Layer `json:"layers"`
	Config Config  `json:"config"`
	// Size is the bytes of file content of all its layers.
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// Dirs returns the layer directories, lowest first.
func (im Image) Dirs() []string {
	out := make([]string, len(im.Layers))
	for i, l := range im.Layers {
		out[i] = l.Dir
	}
	return out
}

// LowerDirs returns the layer directories top first, the order of
// overlayfs's lowerdir option.
func (im Image) LowerDirs() []string {
	out := im.Dirs()
	slices.Reverse(out)
	return out
}

// Config is what an image says about how to run it: a template's defaults.
type Config struct {
	// Env is KEY=VALUE pairs.
	Env []string `json:"env,omitempty"`
	// WorkingDir is the default working directory.
	WorkingDir string `json:"working_dir,omitempty"`
	// User is the image's user as written (name or id, optionally
	// :group); UID and GID are what it resolves to in the image.
	User string `json:"user,omitempty"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	// Entrypoint and Cmd are kept to show; sandboxes do not run them.
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// Getenv returns the value of key in env (KEY=VALUE pairs), the last one
// winning, and whether it is set.
func Getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, _ := cutEnv(env[i]); k == key {
			return v, true
		}
	}
	return "", false
}

// Setenv returns env with key set to value, replacing an earlier value in
// place.
func Setenv(env []string, key, value string) []string {
	out := slices.Clone(env)
	for i, kv := range out {
		if k, _, _ := cutEnv(kv); k == key {
			out[i] = key + "=" + value
			return out
		}
	}
	return append(out, key+"="+value)
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}
