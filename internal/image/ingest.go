package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// AddLayer stores the layer whose uncompressed tar r streams (a build
// step's output, say) and holds it in lease. Its diffID is computed from
// the stream; if the store has that layer already, it is reused.
func (s *Store) AddLayer(ctx context.Context, lease *Lease, r io.Reader, maxBytes int64) (Layer, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return s.ingest(ctx, lease, r, "", newBudget(maxBytes), nil)
}

// ingest unpacks one layer from r (an uncompressed tar) into tmp/ and
// renames it into place. want, if set, is the diffID r must hash to;
// verify, if set, runs once r is read whole and before the layer is
// stored (the check of the compressed digest). The layer is held in lease.
func (s *Store) ingest(ctx context.Context, lease *Lease, r io.Reader, want string, b *budget, verify func() error) (_ Layer, retErr error) {
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "layer-")
	if err != nil {
		return Layer{}, err
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(tmp) // best effort; swept at the next Open
		}
	}()
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return Layer{}, err
	}
	h := sha256.New()
	tee := io.TeeReader(r, h)
	stats, err := unpackLayer(ctx, rootfs, tee, s.base, b)
	if err != nil {
		return Layer{}, err
	}
	// The tar ends before its stream does (padding): hash the rest too,
	// but no more than a tar's padding can be.
	if n, err := io.Copy(io.Discard, io.LimitReader(tee, 1<<20+1)); err != nil {
		return Layer{}, corrupt(err)
	} else if n > 1<<20 {
		return Layer{}, invalidf("layer has data after the end of its archive")
	}
	if verify != nil {
		if err := verify(); err != nil {
			return Layer{}, err
		}
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return Layer{}, invalidf("layer %s is corrupt: its content hashes to %s", want, got)
	}
	layer := Layer{DiffID: got, Size: stats.Bytes, Entries: stats.Entries}
	if err := writeJSON(filepath.Join(tmp, "layer.json"), layerMeta{Layer: layer, CreatedAt: time.Now().UTC()}); err != nil {
		return Layer{}, err
	}
	// Held before it appears, so no GC can take it between the rename and
	// the caller's record.
	lease.pin(got)
	if err := os.Rename(tmp, s.layerDir(got)); err != nil {
		if !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			return Layer{}, err
		}
		_ = os.RemoveAll(tmp) // stored meanwhile by someone else: theirs is as good
	}
	layer.Dir = filepath.Join(s.layerDir(got), "rootfs")
	return layer, nil
}

// sourceError marks an error reading the source itself (the network), as
// opposed to what the bytes say: it is not the image's fault.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// sourceReader tags transport failures and reports progress.
type sourceReader struct {
	r        io.Reader
	n        int64
	reported int64
	report   func(n int64)
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.report != nil && s.n-s.reported >= 1<<20 {
		s.reported = s.n
		s.report(s.n)
	}
	if err != nil && err != io.EOF {
		var ne *net.OpError
		if errors.As(err, &ne) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return n, &sourceError{err}
		}
	}
	return n, err
}

// decompress returns the uncompressed stream of r, whatever of gzip, zstd
// or plain tar it is (told by its first bytes, not by a media type that
// docker archives get wrong).
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, corrupt(err)
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, corrupt(err)
		}
		return zr, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, corrupt(err)
		}
		return zstdCloser{zr}, nil
	default:
		return io.NopCloser(br), nil
	}
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error {
	z.Decoder.Close()
	return nil
}

// drainCheck reads r to its end and compares its sha256 with want.
func drainCheck(r io.Reader, h hash.Hash, want string) error {
	if _, err := io.Copy(io.Discard, io.LimitReader(r, 1<<20)); err != nil {
		return corrupt(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
		return invalidf("layer blob %s is corrupt: it hashes to %s", want, got)
	}
	return nil
}

func newHash() hash.Hash { return sha256.New() }
