package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) templateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "template", Aliases: []string{"templates"}, Short: "Manage templates"}
	cmd.AddCommand(c.templateList(), c.templateAdd(), c.templateRemove(), c.templateBuild())
	return cmd
}

func (c *cli) templateList() *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List templates", Args: cobra.NoArgs,
		RunE: act(c, func(ctx context.Context, cl *client.Client, _ []string) ([]client.Template, error) {
			return cl.ListTemplates(ctx)
		}, func(list []client.Template) error {
			rows := make([][]string, 0, len(list))
			for _, t := range list {
				kind := "imported"
				switch {
				case t.BuiltIn:
					kind = "built-in"
				case t.From != "":
					kind = "from " + t.From
				case t.Image != nil && t.Image.Source == "":
					kind = "dockerfile"
				case t.Image != nil:
					kind = "image"
				}
				layers, origin := "1", t.Origin
				if t.Image != nil {
					layers = strconv.Itoa(t.Image.Layers)
					if t.Image.SharedLayers > 0 {
						layers += fmt.Sprintf(" (%d shared)", t.Image.SharedLayers)
					}
				}
				if t.From != "" {
					layers = "-"
				}
				if origin == "" {
					origin = "-"
				}
				var hooks []string
				for _, h := range []struct{ name, script string }{{"setup", t.Hooks.Setup},
					{"session_setup", t.Hooks.SessionSetup}, {"session_teardown", t.Hooks.SessionTeardown}} {
					if h.script != "" {
						hooks = append(hooks, h.name)
					}
				}
				rows = append(rows, []string{t.Name, kind, strings.Join(hooks, ","), strconv.FormatInt(t.SizeBytes, 10), layers,
					t.CreatedAt.Local().Format(time.DateTime), origin})
			}
			return c.table("NAME\tKIND\tHOOKS\tSIZE\tLAYERS\tCREATED\tORIGIN", rows)
		}),
	}
}

func (c *cli) templateAdd() *cobra.Command {
	var (
		tarFile       string
		passwordStdin bool
		gpus          int
		req           client.TemplateRequest
		nf            networkFlags
	)
	add := &cobra.Command{
		Use:   "add NAME (--dir DIR | --tar FILE | --from TEMPLATE | --image REF | --oci-layout DIR | --docker-archive FILE) [--setup SCRIPT] ... [--build]",
		Short: "Register a root filesystem or a container image as a template, or define one on another with hooks (admin)",
		Long: `Register a root filesystem or a container image as a template, or define one on
another with hooks (admin).

--image pulls an image from an OCI or Docker registry (plain HTTP for
registries on localhost; credentials from --username and --password-stdin,
else from the server's Docker config file); --oci-layout and --docker-archive
(the output of docker save) read one on the server's host. Layers are stored
once on the server and shared by every template that has them. The image's
Env, WorkingDir and User become the defaults of the template's sandboxes;
its Entrypoint and Cmd are kept to read (sandboxes run sandpool's agent).

With --build, a sandbox of the new template is made at once and its setup runs
there, its output shown as it comes: a setup that fails refuses the template
with the end of its output, and leaves nothing behind. Without it, the setup
first runs when a sandbox is created.`,
		Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (*client.Template, error) {
			given := 0
			for _, v := range []string{req.Dir, tarFile, req.From, req.Image, req.OCILayout, req.DockerArchive} {
				if v != "" {
					given++
				}
			}
			if given != 1 {
				return nil, errors.New("give exactly one of --dir (a directory on the server's host), --tar (a local tar file, - for stdin), --from (an existing template), --image (a registry reference), --oci-layout and --docker-archive (on the server's host)")
			}
			req.Name = args[0]
			for _, p := range []*string{&req.OCILayout, &req.DockerArchive} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return nil, err
					}
					*p = abs
				}
			}
			if passwordStdin {
				b, err := io.ReadAll(io.LimitReader(c.stdin, 64<<10))
				if err != nil {
					return nil, err
				}
				req.Password = strings.TrimRight(string(b), "\r\n")
			}
			var err error
			if req.Network, err = nf.network(); err != nil {
				return nil, err
			}
			var progress io.Writer
			if req.Build {
				progress = c.stderr
				fmt.Fprintf(c.stderr, "sandpool: building %s: running its setup in a new sandbox\n", req.Name)
			}
			if req.ImageSource.Image != "" || req.OCILayout != "" || req.DockerArchive != "" {
				progress = newPullPrinter(c.stderr)
			}
			if gpus != 0 {
				if tarFile != "" {
					return nil, errors.New("--gpus with --tar: add the template, then define one on it with --from NAME --gpus N")
				}
				req.Limits = &client.Limits{GPUs: gpus}
			}
			if tarFile == "" {
				if req.Dir != "" {
					abs, err := filepath.Abs(req.Dir)
					if err != nil {
						return nil, err
					}
					req.Dir = abs
				}
				return cl.AddTemplate(ctx, req, progress)
			}
			var r io.Reader = c.stdin
			if tarFile != "-" {
				f, err := os.Open(tarFile)
				if err != nil {
					return nil, err
				}
				defer f.Close()
				r = f
			}
			return cl.AddTemplateFromTar(ctx, req.Name, r, client.TemplateUpload{Hooks: req.Hooks, Build: req.Build}, progress)
		}, func(t *client.Template) error { return c.line(t.Name) }),
	}
	f := add.Flags()
	f.StringVar(&req.Dir, "dir", "", "root filesystem directory on the server's host")
	f.StringVar(&tarFile, "tar", "", "root filesystem tar archive (- for standard input)")
	f.StringVar(&req.From, "from", "", "use this template's files")
	f.StringVar(&req.Setup, "setup", "", "shell script run as root once per sandbox, before it is ready")
	f.StringVar(&req.SessionSetup, "session-setup", "", "shell script run as root before each session")
	f.StringVar(&req.SessionTeardown, "session-teardown", "", "shell script run as root after each session")
	f.IntVar(&req.SetupTimeout, "setup-timeout", 0, "seconds each hook may take (default 600)")
	f.BoolVar(&req.Build, "build", false, "run the setup now, showing its output; refuse the template if it fails")
	f.IntVar(&gpus, "gpus", 0, "GPUs its sandboxes get unless a create says otherwise")
	f.StringVar(&req.ImageSource.Image, "image", "", "pull this image from a registry (docker.io/library/python:3.12-slim)")
	f.StringVar(&req.OCILayout, "oci-layout", "", "an OCI image layout directory on the server's host")
	f.StringVar(&req.DockerArchive, "docker-archive", "", "a docker save archive on the server's host")
	f.StringVar(&req.ImageName, "image-name", "", "which image of a layout or archive that holds several")
	f.StringVar(&req.Platform, "platform", "", "os/arch[/variant] of the image (default: the server's)")
	f.StringVar(&req.Username, "username", "", "registry user (default: the server's Docker config file)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the registry password from standard input")
	f.BoolVar(&req.Insecure, "insecure", false, "allow plain HTTP to the registry")
	nf.add(f, "the setup (and --build)")
	return add
}

func (c *cli) templateRemove() *cobra.Command {
	return &cobra.Command{
		Use: "rm NAME", Short: "Delete a template no pool or sandbox uses (admin)", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (any, error) {
			return nil, cl.DeleteTemplate(ctx, args[0])
		}, nil),
	}
}
