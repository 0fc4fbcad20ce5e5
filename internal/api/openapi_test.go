package api

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/sandbox"
)

type openAPIDoc struct {
	OpenAPI    string                    `yaml:"openapi"`
	Paths      map[string]map[string]any `yaml:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]any `yaml:"properties"`
			AllOf      []struct {
				Ref        string         `yaml:"$ref"`
				Properties map[string]any `yaml:"properties"`
			} `yaml:"allOf"`
		} `yaml:"schemas"`
	} `yaml:"components"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	b, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	return doc
}

// The document lists exactly the routes the server serves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	var documented []string
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			op, _ := op.(map[string]any)
			if _, ok := op["responses"]; !ok {
				t.Errorf("%s %s has no responses", method, path)
			}
			if _, ok := op["operationId"]; !ok {
				t.Errorf("%s %s has no operationId", method, path)
			}
		}
	}
	served := append((&Server{}).Routes(), "GET /metrics")
	for i, r := range served {
		served[i] = strings.ReplaceAll(r, "...}", "}") // {path...} is {path} in OpenAPI
	}
	slices.Sort(documented)
	slices.Sort(served)
	if diff := cmp.Diff(served, documented); diff != "" {
		t.Errorf("routes (-served +documented):\n%s", diff)
	}
}

// jsonFields lists the JSON names of t's fields, embedded structs included.
func jsonFields(t reflect.Type) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "":
			out = append(out, jsonFields(f.Type)...)
		case name != "":
			out = append(out, name)
		case f.IsExported():
			out = append(out, f.Name)
		}
	}
	return out
}

// The document's schemas have the fields the Go types have: the server's,
// and the public client's, so neither can drift from the document.
func TestOpenAPIMatchesTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	for name, v := range clientTypes {
		checkSchema(t, doc, name, "client", v)
	}
	for name, v := range map[string]any{
		"Limits":          runtime.Limits{},
		"CreateSandbox":   sandbox.CreateRequest{},
		"Sandbox":         sandbox.Sandbox{},
		"Exec":            ExecRequest{},
		"ExitStatus":      proc.ExitStatus{},
		"ExecResult":      ExecResult{},
		"ExecEvent":       Event{},
		"Process":         proc.Info{},
		"FileInfo":        fsys.Info{},
		"Template":        sandbox.Template{},
		"Hooks":           sandbox.Hooks{},
		"PoolConfig":      pool.Config{},
		"Pool":            pool.Info{},
		"PoolUpdate":      pool.Update{},
		"Acquire":         AcquireRequest{},
		"Release":         ReleaseRequest{},
		"Pause":           PauseRequest{},
		"Resumed":         ResumeResult{},
		"Timeout":         sandbox.TimeoutRequest{},
		"Node":            sandbox.NodeInfo{},
		"GPU":             sandbox.GPUInfo{},
		"Key":             keys.Key{},
		"BuildEvent":      BuildEvent{},
		"TemplateRequest": TemplateRequest{},
		"Event":           events.Event{},
		"TemplateImage":   sandbox.TemplateImage{},
		"PullProgress":    sandbox.PullProgress{},
		"Metrics":         sandbox.Metrics{},
		"TermSize":        proc.Size{},
		"FileEvent":       fsys.Event{},
		"Network":         runtime.Network{},
		"NetworkStats":    runtime.NetworkStats{},
		"SandboxNetwork":  sandbox.SandboxNetwork{},
	} {
		checkSchema(t, doc, name, "server", v)
	}
}

// clientTypes are the client's types that travel as they are on the wire,
// by schema.
var clientTypes = map[string]any{
	"Limits":          client.Limits{},
	"CreateSandbox":   client.CreateSandboxRequest{},
	"Sandbox":         client.Sandbox{},
	"ExitStatus":      client.ExitStatus{},
	"Process":         client.Process{},
	"FileInfo":        client.FileInfo{},
	"Template":        client.Template{},
	"Hooks":           client.Hooks{},
	"TemplateRequest": client.TemplateRequest{},
	"PoolConfig":      client.PoolConfig{},
	"Pool":            client.Pool{},
	"PoolUpdate":      client.PoolUpdate{},
	"Resumed":         client.Resumed{},
	"Timeout":         client.TimeoutUpdate{},
	"Node":            client.NodeInfo{},
	"GPU":             client.GPU{},
	"Build":           client.BuildInfo{},
	"Key":             client.Key{},
	"Event":           client.SandboxEvent{},
	"TemplateImage":   client.TemplateImage{},
	"PullProgress":    client.PullProgress{},
	"Metrics":         client.Metrics{},
	"TermSize":        client.TermSize{},
	"FileEvent":       client.FileEvent{},
	"Network":         client.Network{},
	"NetworkStats":    client.NetworkStats{},
	"SandboxNetwork":  client.SandboxNetwork{},
}

func checkSchema(t *testing.T, doc openAPIDoc, name, side string, v any) {
	t.Helper()
	{
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			return
		}
		var documented []string
		for p := range schema.Properties {
			documented = append(documented, p)
		}
		for _, part := range schema.AllOf {
			props := part.Properties
			if ref, ok := strings.CutPrefix(part.Ref, "#/components/schemas/"); ok {
				props = doc.Components.Schemas[ref].Properties
			}
			for p := range props {
				documented = append(documented, p)
			}
		}
		code := jsonFields(reflect.TypeOf(v))
		slices.Sort(documented)
		slices.Sort(code)
		documented = slices.Compact(documented)
		if diff := cmp.Diff(code, documented); diff != "" {
			t.Errorf("schema %s, %s type %T (-Go +documented):\n%s", name, side, v, diff)
		}
	}
}
