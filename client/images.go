package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// ImageSource says where an image template's image comes from (exactly
// one of Image, OCILayout and DockerArchive) and how to fetch it.
type ImageSource struct {
	// Image is a reference in an OCI or Docker registry
	// ("docker.io/library/python:3.12-slim"); registries on localhost are
	// reached over plain HTTP.
	Image string `json:"image,omitempty"`
	// OCILayout is an OCI image layout directory, DockerArchive a
	// `docker save` file: absolute paths on the server's host.
	OCILayout     string `json:"oci_layout,omitempty"`
	DockerArchive string `json:"docker_archive,omitempty"`
	// ImageName picks one image of a layout or archive holding several.
	ImageName string `json:"image_name,omitempty"`
	// Platform is os/arch[/variant]; empty means the server's.
	Platform string `json:"platform,omitempty"`
	// Username and Password log in to the registry; without them the
	// server uses its Docker config file.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// Insecure allows plain HTTP to the registry.
	Insecure bool `json:"insecure,omitempty"`
}

func (s ImageSource) set() bool { return s.Image != "" || s.OCILayout != "" || s.DockerArchive != "" }

// TemplateImage describes a template made from an image or a Dockerfile.
type TemplateImage struct {
	// Source is the image reference; empty for a Dockerfile build.
	Source   string `json:"source,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Platform string `json:"platform,omitempty"`
	// Layers its sandboxes stack; SharedLayers of them other templates
	// use too (stored once); UniqueBytes is what deleting it frees.
	Layers       int   `json:"layers"`
	SharedLayers int   `json:"shared_layers"`
	UniqueBytes  int64 `json:"unique_bytes"`
	// The image's config: Env, WorkingDir and User are its sandboxes'
	// defaults; Entrypoint and Cmd are shown only (sandboxes run
	// sandpool's agent as PID 1).
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
	User       string            `json:"user,omitempty"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// PullProgress reports on one layer of an image pull.
type PullProgress struct {
	// Layer is 1-based, of Layers.
	Layer  int    `json:"layer"`
	Layers int    `json:"layers"`
	Digest string `json:"digest"`
	// Bytes fetched so far of Total (compressed; 0 when unknown).
	Bytes int64 `json:"bytes"`
	Total int64 `json:"total"`
	// Cached: the server had the layer already; nothing was fetched.
	Cached bool `json:"cached,omitempty"`
	Done   bool `json:"done,omitempty"`
}

// PullReporter is a progress writer that also wants to hear how an image
// pull goes (AddTemplate, BuildTemplate): a plain io.Writer gets only the
// output of builds and setups.
type PullReporter interface {
	PullProgress(PullProgress)
}

// BuildOptions say how to build a Dockerfile into a template.
type BuildOptions struct {
	// Dockerfile is its path in the context; empty means "Dockerfile".
	Dockerfile string
	// Args are --build-arg values.
	Args map[string]string
	// NoCache runs every step.
	NoCache bool
	// Platform of the images FROM pulls; empty means the server's.
	Platform string
	// Hooks for the template, as with AddTemplate; Build runs its setup
	// once at the end. Hooks.Network is also the RUN steps' egress policy
	// (nil: the server's default).
	Hooks
	Build bool
}

// BuildTemplate builds a Dockerfile into template name (admin key).
// buildContext is the build context as an uncompressed tar stream, with the
// Dockerfile in it. The build's output (its steps, and what RUN commands
// print) is copied to progress as it comes, if progress is not nil; see
// PullReporter. A RUN that fails is a 422 build_failed error with its
// output; a failed build leaves nothing on the server.
func (c *Client) BuildTemplate(ctx context.Context, name string, buildContext io.Reader, opts BuildOptions, progress io.Writer) (*Template, error) {
	q := url.Values{}
	for k, v := range map[string]string{"dockerfile": opts.Dockerfile, "platform": opts.Platform,
		"setup": opts.Setup, "session_setup": opts.SessionSetup, "session_teardown": opts.SessionTeardown} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, v := range opts.Args {
		q.Add("build_arg", k+"="+v)
	}
	if opts.NoCache {
		q.Set("no_cache", "true")
	}
	if n := opts.Network; n != nil {
		setNetworkQuery(q, *n)
	}
	if opts.Build {
		q.Set("build", "true")
	}
	if opts.SetupTimeout != 0 {
		q.Set("setup_timeout", strconv.Itoa(opts.SetupTimeout))
	}
	h := http.Header{}
	h.Set("Content-Type", "application/x-tar")
	r := request{method: "POST", path: "/v1/templates/" + url.PathEscape(name) + "/build", query: q,
		stream: struct{ io.Reader }{buildContext}, header: h}
	return c.addTemplate(ctx, r, progress != nil, progress)
}
