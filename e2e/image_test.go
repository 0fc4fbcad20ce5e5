package e2e

import (
	goruntime "runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

// testImages serves, until the test ends, a registry on loopback with:
// busybox:1 (a busybox root filesystem), app:1 (busybox and a layer with
// a program, an "app" user, env and a working directory) and app:2 (app:1
// and one more layer). It returns the registry's host:port.
func testImages(t *testing.T) string {
	t.Helper()
	host := it.Registry(t, "", "")
	base := it.Layer(t, append(it.Busybox(t),
		it.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001:app:/home/app:/bin/sh\n", 0o644),
		it.File("etc/group", "root:x:0:\napp:x:1001:\n", 0o644),
		it.Dir("home/app/", 0o755), it.Dir("srv/", 0o777))...)
	prog := it.Layer(t, it.Dir("usr/", 0o755), it.Dir("usr/local/", 0o755), it.Dir("usr/local/bin/", 0o755),
		it.File("usr/local/bin/hello", "#!/bin/sh\necho \"hello $*, from $(id -un) in $(pwd) ($GREETING)\"\n", 0o755))
	cfg := v1.Config{Env: []string{"PATH=/usr/local/bin:/bin", "GREETING=from the image"}, WorkingDir: "/srv", User: "app",
		Entrypoint: []string{"hello"}, Cmd: []string{"world"}}
	it.Push(t, host+"/busybox:1", it.Image(t, "", v1.Config{Env: []string{"PATH=/bin"}}, base), "", "")
	platform := goruntime.GOOS + "/" + goruntime.GOARCH
	it.Push(t, host+"/app:1", it.Image(t, platform, cfg, base, prog), "", "")
	it.Push(t, host+"/app:2", it.Image(t, platform, cfg, base, prog, it.Layer(t, it.File("srv/v2", "two", 0o644))), "", "")
	return host
}
