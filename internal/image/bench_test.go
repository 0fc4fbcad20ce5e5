package image_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
)

// randomLayer is a layer of n files of size bytes each, half random (not
// compressible) and half text (compressible), as real images are.
func randomLayer(b *testing.B, prefix string, n, size int) v1.Layer {
	b.Helper()
	var entries []it.Entry
	for i := 0; i < n; i++ {
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

// BenchmarkPull pulls and unpacks a 100 MiB image (4 layers, 400 files)
// from a registry on loopback into an empty store.
func BenchmarkPull(b *testing.B) {
	host := it.Registry(b, "", "")
	var layers []v1.Layer
	for i := 0; i < 4; i++ {
		layers = append(layers, randomLayer(b, fmt.Sprintf("l%d", i), 100, 256<<10))
	}
	it.Push(b, host+"/big:1", it.Image(b, "", v1.Config{}, layers...), "", "")
	var size int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openStore(b)
		b.StartTimer()
		lease := s.Lease()
		img, err := s.Pull(context.Background(), lease, image.Source{Ref: host + "/big:1"}, image.Options{})
		if err != nil {
			b.Fatal(err)
		}
		lease.Release()
		size = img.Size
	}
	b.SetBytes(size)
	b.ReportMetric(float64(size)/(1<<20), "MiB/image")
}

// BenchmarkTenTemplatesOnOneBase measures the disk ten templates use that
// share a 40 MiB base, each with a 1 MiB layer of its own.
func BenchmarkTenTemplatesOnOneBase(b *testing.B) {
	host := it.Registry(b, "", "")
	base := randomLayer(b, "base", 40, 1<<20)
	for t := 0; t < 10; t++ {
		img := it.Image(b, "", v1.Config{}, base, randomLayer(b, fmt.Sprintf("t%d", t), 4, 256<<10))
		it.Push(b, fmt.Sprintf("%s/t%d:1", host, t), img, "", "")
	}
	var used, naive int64
	for i := 0; i < b.N; i++ {
		s := openStore(b)
		naive = 0
		for t := 0; t < 10; t++ {
			lease := s.Lease()
			img, err := s.Pull(context.Background(), lease, image.Source{Ref: fmt.Sprintf("%s/t%d:1", host, t)}, image.Options{})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Commit(fmt.Sprintf("t%d", t), img); err != nil {
				b.Fatal(err)
			}
			lease.Release()
			naive += img.Size
		}
		used = diskUsage(b, s.Dir())
	}
	b.ReportMetric(float64(used)/(1<<20), "MiB-on-disk")
	b.ReportMetric(float64(naive)/(1<<20), "MiB-if-unshared")
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
