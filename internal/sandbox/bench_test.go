package sandbox_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

// benchService is a service with an image store, for benchmarks.
func benchService(b *testing.B) (*sandbox.Service, string) {
	b.Helper()
	rt := linuxtest.Open(b)
	images, err := image.Open(image.StoreConfig{Dir: filepath.Join(rt.DataDir(), "images")})
	if err != nil {
		b.Fatal(err)
	}
	svc := sandbox.New(rt, storetest.SQLite(b), events.NewBroker(), sandbox.Config{Node: "n1", Images: images})
	if err := svc.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(svc.Close)
	return svc, rt.DataDir()
}

// randomLayer is n files of size bytes, half random and half text, as
// real images are.
func randomLayer(b *testing.B, prefix string, n, size int) v1.Layer {
	b.Helper()
	var entries []it.Entry
	for i := range n {
		body := make([]byte, size)
		if i%2 == 0 {
			_, _ = rand.Read(body)
		} else {
			for j := range body {
				body[j] = "abcdefghij\n"[j%11]
			}
		}
		entries = append(entries, it.File(fmt.Sprintf("%s/f%04d", prefix, i), string(body), 0o644))
	}
	return it.Layer(b, entries...)
}

// BenchmarkAddImageTemplate makes a template of a 100 MiB image (4
// layers, 400 files) pulled from a registry on loopback, then deletes it
// (its layers go too): what `sandpool template add --image` costs.
func BenchmarkAddImageTemplate(b *testing.B) {
	svc, _ := benchService(b)
	ctx := context.Background()
	host := it.Registry(b, "", "")
	var layers []v1.Layer
	for i := range 4 {
		layers = append(layers, randomLayer(b, fmt.Sprintf("l%d", i), 100, 256<<10))
	}
	it.Push(b, host+"/big:1", it.Image(b, "", v1.Config{}, layers...), "", "")
	var size int64
	for b.Loop() {
		tpl, err := svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "big", Image: &sandbox.ImageSource{Ref: host + "/big:1"}})
		if err != nil {
			b.Fatal(err)
		}
		size = tpl.SizeBytes
		b.StopTimer()
		if err := svc.DeleteTemplate(ctx, "big"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.SetBytes(size)
	b.ReportMetric(float64(size)/(1<<20), "MiB/image")
}

// BenchmarkTenImageTemplates makes ten templates of images that share a
// 40 MiB base, each with 1 MiB of its own, and reports the disk they use
// (layer store and template records) against what ten copies would take.
func BenchmarkTenImageTemplates(b *testing.B) {
	svc, data := benchService(b)
	ctx := context.Background()
	host := it.Registry(b, "", "")
	base := randomLayer(b, "base", 40, 1<<20)
	for t := range 10 {
		it.Push(b, fmt.Sprintf("%s/t%d:1", host, t), it.Image(b, "", v1.Config{}, base, randomLayer(b, fmt.Sprintf("t%d", t), 4, 256<<10)), "", "")
	}
	var used, unshared int64
	for b.Loop() {
		unshared = 0
		for t := range 10 {
			tpl, err := svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: fmt.Sprintf("t%d", t), Image: &sandbox.ImageSource{Ref: fmt.Sprintf("%s/t%d:1", host, t)}})
			if err != nil {
				b.Fatal(err)
			}
			unshared += tpl.SizeBytes
		}
		b.StopTimer()
		used = diskUsage(b, filepath.Join(data, "images")) + diskUsage(b, filepath.Join(data, "templates")) - diskUsage(b, filepath.Join(data, "templates", "base"))
		for t := range 10 {
			if err := svc.DeleteTemplate(ctx, fmt.Sprintf("t%d", t)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(used)/(1<<20), "MiB-on-disk")
	b.ReportMetric(float64(unshared)/(1<<20), "MiB-if-unshared")
	b.ReportMetric(0, "ns/op")
}

// diskUsage is the blocks allocated under dir, each inode counted once.
func diskUsage(tb testing.TB, dir string) int64 {
	seen := map[uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return total
}
