// Package pgtest gives tests a real PostgreSQL: the server named by
// $SANDPOOL_TEST_POSTGRES (a URL whose database the tests may create
// databases next to), or else a private cluster this package starts from
// the Debian packages' binaries (apt-get install postgresql), once per test
// binary, listening only on a Unix socket in a temporary directory. Each
// call to URL gets a fresh database.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

var (
	once    sync.Once
	base    string // URL of the server's postgres database
	dir     string // the private cluster's directory, if we started one
	bin     string
	pgUser  *user.User
	initErr error
)

// URL returns the URL of a fresh, empty database.
func URL(tb testing.TB) string {
	tb.Helper()
	once.Do(start)
	if initErr != nil {
		tb.Fatalf("PostgreSQL for tests: %v", initErr)
	}
	name := "t_" + suffix()
	db, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	u, _ := url.Parse(base)
	u.Path = "/" + name
	return u.String()
}

// Stop stops the private cluster, if one was started. TestMain calls it.
func Stop() {
	if dir == "" {
		return
	}
	cmd := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "-w", "stop")
	asPostgres(cmd)
	_ = cmd.Run() // best effort: the directory goes either way
	os.RemoveAll(dir)
}

func suffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b[:])
}

func start() {
	if env := os.Getenv("SANDPOOL_TEST_POSTGRES"); env != "" {
		base = env
		return
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		initErr = fmt.Errorf("no PostgreSQL binaries (install them: apt-get install postgresql) and $SANDPOOL_TEST_POSTGRES is not set")
		return
	}
	sort.Strings(bins)
	bin = filepath.Dir(bins[len(bins)-1])
	if pgUser, initErr = user.Lookup("postgres"); initErr != nil {
		initErr = fmt.Errorf("PostgreSQL runs as the postgres user: %w", initErr)
		return
	}
	if dir, initErr = os.MkdirTemp("", "sandpool-pg-"); initErr != nil {
		return
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	if initErr = os.Chown(dir, uid, gid); initErr != nil {
		return
	}
	data := filepath.Join(dir, "data")
	for _, args := range [][]string{
		{filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"},
		{filepath.Join(bin, "pg_ctl"), "-D", data, "-w", "-l", filepath.Join(dir, "log"), "start",
			"-o", "-c listen_addresses='' -k " + dir + " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500"},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		asPostgres(cmd)
		if out, err := cmd.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			initErr = fmt.Errorf("%s: %v\n%s\n%s", filepath.Base(args[0]), err, out, log)
			return
		}
	}
	base = (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres",
		RawQuery: url.Values{"host": {dir}, "sslmode": {"disable"}}.Encode()}).String()
}

func asPostgres(cmd *exec.Cmd) {
	if pgUser == nil || os.Geteuid() != 0 {
		return
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Dir = os.TempDir()
}
