package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/internal/api"
	"github.com/sandpool/sandpool/internal/buildinfo"
	"github.com/sandpool/sandpool/internal/cluster"
	"github.com/sandpool/sandpool/internal/dashboard"
	"github.com/sandpool/sandpool/internal/e2b"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/image"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/mcpserver"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
)

// Defaults, in one place.
const (
	defaultListen  = "127.0.0.1:7423"
	defaultDataDir = "/var/lib/sandpool"
	adminKeyFile   = "admin.key"
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

type serveConfig struct {
	listen          string
	data            string
	node            string
	maxSandboxes    int
	shutdownTimeout time.Duration
	cgroupParent    string
	logLevel        string
	cpuProfile      string
	archiveAfter    time.Duration
	store           string
	advertise       string
	leaseTTL        time.Duration
	nodeTimeout     time.Duration
	maxTemplateSize string
	domain          string
	egress          egressConfig
	gpus            string
	gpuSharing      bool
	gpuRoot         string
}

func serveCommand(stderr io.Writer) *cobra.Command {
	var cfg serveConfig
	host, _ := os.Hostname() // a node without a hostname is named "node"
	if host == "" {
		host = "node"
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the sandpool service",
		Long: `Run the sandpool service: the HTTP API on --listen, with its database,
templates and sandboxes under --data. Needs root. On first start it creates an
admin API key and writes it to <data>/admin.key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), cfg, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.listen, "listen", envOr("SANDPOOL_LISTEN", defaultListen), "address to serve on (env SANDPOOL_LISTEN)")
	f.StringVar(&cfg.data, "data", envOr("SANDPOOL_DATA", defaultDataDir), "data directory (env SANDPOOL_DATA)")
	f.StringVar(&cfg.node, "node", envOr("SANDPOOL_NODE", host), "this node's name (env SANDPOOL_NODE)")
	f.IntVar(&cfg.maxSandboxes, "max-sandboxes", 1000, "most sandboxes this node runs at once")
	f.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on SIGTERM")
	f.StringVar(&cfg.cgroupParent, "cgroup-parent", envOr("SANDPOOL_CGROUP_PARENT", "sandpool"), "cgroup under which sandboxes get theirs")
	f.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.store, "store", envOr("SANDPOOL_STORE", ""), "database: empty for SQLite in the data directory, or postgres://... shared by several nodes (env SANDPOOL_STORE)")
	f.StringVar(&cfg.advertise, "advertise", envOr("SANDPOOL_ADVERTISE", ""), "URL other nodes reach this one at (default: http://<listen address>) (env SANDPOOL_ADVERTISE)")
	f.DurationVar(&cfg.leaseTTL, "lease-ttl", 10*time.Second, "how long a pool leader's lease lasts unrenewed")
	f.DurationVar(&cfg.nodeTimeout, "node-timeout", 10*time.Second, "how long a node may be silent before others mark it down and its sandboxes lost")
	f.DurationVar(&cfg.archiveAfter, "archive-after", 10*time.Minute, "how long a paused sandbox stays frozen (memory kept) before it is archived (files kept), unless it says otherwise")
	f.StringVar(&cfg.maxTemplateSize, "max-template-size", "16G", "largest template made from an image or a Dockerfile (its layers, compressed and unpacked): 512M, 20G")
	f.StringVar(&cfg.domain, "domain", envOr("SANDPOOL_DOMAIN", e2b.DefaultDomain), "E2B API: sandbox ports are reached as <port>-<sandboxID>.<domain> (env SANDPOOL_DOMAIN)")
	cfg.egress.addFlags(f)
	f.StringVar(&cfg.gpus, "gpus", envOr("SANDPOOL_GPUS", "all"), "GPUs sandboxes may be given: all (of those found), none, or a list of indexes and UUIDs such as 0,2 (env SANDPOOL_GPUS)")
	f.BoolVar(&cfg.gpuSharing, "gpu-sharing", false, "let several sandboxes hold one GPU (by default each GPU has at most one)")
	f.StringVar(&cfg.cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (for developers)")
	_ = f.MarkHidden("cpu-profile")
	// Tests point discovery at stand-in device nodes.
	f.StringVar(&cfg.gpuRoot, "gpu-root", "/", "look for GPUs (dev/nvidia*, proc/driver/nvidia) under this directory (for tests)")
	_ = f.MarkHidden("gpu-root")
	return cmd
}

// preflight says clearly why sandpool cannot run here.
func preflight(cfg serveConfig) error {
	if os.Geteuid() != 0 {
		return errors.New("sandpool serve must run as root: it makes namespaces, cgroups and mounts (try: sudo sandpool serve)")
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil && !strings.Contains(string(b), "\toverlay\n") {
		return errors.New("this kernel has no overlayfs (try: modprobe overlay)")
	}
	if !filepath.IsAbs(cfg.data) {
		return fmt.Errorf("--data %q must be an absolute path", cfg.data)
	}
	if cfg.store != "" && !strings.HasPrefix(cfg.store, "postgres://") && !strings.HasPrefix(cfg.store, "postgresql://") {
		return fmt.Errorf("--store %q: want postgres://... (or nothing, for SQLite)", cfg.store)
	}
	if cfg.leaseTTL < 300*time.Millisecond || cfg.nodeTimeout < time.Second {
		return fmt.Errorf("--lease-ttl must be at least 300ms and --node-timeout at least 1s")
	}
	if cfg.archiveAfter <= 0 {
		return fmt.Errorf("--archive-after %s must be positive", cfg.archiveAfter)
	}
	if cfg.maxSandboxes <= 0 {
		return fmt.Errorf("--max-sandboxes %d must be positive", cfg.maxSandboxes)
	}
	if n, err := parseSize(cfg.maxTemplateSize); err != nil || n <= 0 {
		return fmt.Errorf("--max-template-size %q: want a positive size such as 512M or 20G", cfg.maxTemplateSize)
	}
	return cfg.egress.check()
}

func serve(ctx context.Context, cfg serveConfig, stderr io.Writer) error {
	if err := preflight(cfg); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	// Listen first: a taken port is the most common mistake, and must not
	// cost a runtime start.
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("cannot listen on %s: the address is in use (another sandpool? choose one with --listen)", cfg.listen)
		}
		return fmt.Errorf("cannot listen on %s: %w", cfg.listen, err)
	}
	defer ln.Close()

	// The GPUs next, also before the runtime starts: --gpus naming one
	// that is not there stops here.
	gpuHost, err := discoverGPUs(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	reg := prometheus.NewRegistry()
	// Before the runtime: it gives the running sandboxes it finds their
	// network links again. Closed after it.
	eng, err := cfg.egress.engine(reg, log)
	if err != nil {
		return err
	}
	if eng != nil {
		defer eng.Close()
	}
	rt, err := linux.Open(linux.Config{DataDir: cfg.data, CgroupParent: cfg.cgroupParent, Egress: eng, Log: log})
	if err != nil {
		return err
	}
	defer rt.Close()
	// Layers of templates made from images and Dockerfiles; Open sweeps
	// what a pull or build cut short by a crash left.
	images, err := image.Open(image.StoreConfig{Dir: filepath.Join(cfg.data, "images"), UIDBase: rt.UIDBase()})
	if err != nil {
		return err
	}
	maxTemplate, _ := parseSize(cfg.maxTemplateSize) // checked by preflight
	var st *sqlstore.DB
	if cfg.store == "" {
		st, err = sqlstore.OpenSQLite(ctx, filepath.Join(cfg.data, "sandpool.db"))
	} else {
		st, err = sqlstore.OpenPostgres(ctx, cfg.store)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	ks := keys.New(st)
	if err := ensureAdminKey(ctx, ks, cfg.data, stderr); err != nil {
		return err
	}

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	build := buildinfo.Get()
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{Name: "sandpool_build_info",
		Help: "The build this node runs (always 1): module version, VCS revision, whether the tree was modified, Go version."},
		[]string{"version", "revision", "modified", "go_version"}).
		WithLabelValues(build.Version, build.Revision, strconv.FormatBool(build.Modified), build.GoVersion).Set(1)
	broker := events.NewBroker()
	advertise := cfg.advertise
	if advertise == "" {
		advertise = "http://" + ln.Addr().String()
	}
	svc := sandbox.New(rt, st, broker, sandbox.Config{Node: cfg.node, MaxSandboxes: cfg.maxSandboxes,
		ArchiveAfter: cfg.archiveAfter, DefaultNetwork: cfg.egress.defaultNetwork(), Log: log, Registry: reg,
		Images: images, MaxTemplateBytes: maxTemplate, GPUHost: gpuHost, GPUSharing: cfg.gpuSharing})
	cl := cluster.New(st, svc, broker, cluster.Options{Node: cfg.node, Address: advertise, Capacity: cfg.maxSandboxes,
		NodeTimeout: cfg.nodeTimeout, Exclusive: cfg.store == "", Log: log})
	if err := cl.Start(ctx); err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	defer cl.Close()
	if err := svc.Start(ctx); err != nil {
		return fmt.Errorf("recover sandboxes: %w", err)
	}
	defer svc.Close()
	pools := pool.NewManager(svc, st, broker, pool.Options{Node: cfg.node, Log: log, Registry: reg,
		LeaseTTL: cfg.leaseTTL, Remote: cl})
	if err := pools.Start(ctx); err != nil {
		return fmt.Errorf("start pools: %w", err)
	}
	defer pools.Close()
	svc.AddTemplateUsers(pools) // a template a pool uses is not deleted
	apiSrv := api.New(svc, pools, ks, idempotency.New(st), api.Config{Log: log, Registry: reg, Cluster: cl})
	mcpSrv, err := mcpserver.NewHandler(apiSrv, mcpserver.Config{Version: build.Version, Log: log})
	if err != nil {
		return err
	}
	dash, err := dashboard.New(svc, pools, ks, dashboard.Config{Node: cfg.node, Nodes: cl, Log: log, Registry: reg})
	if err != nil {
		return err
	}
	defer dash.Close()
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcpSrv) // MCP over streamable HTTP: the API in process, per caller's key
	mux.Handle("/ui/", dash)   // the web dashboard
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusSeeOther))
	mux.Handle("/", apiSrv)
	// The E2B API on the same listener: its control plane by path, envd and
	// sandbox ports by host name or routing headers; the rest is ours.
	e2bSrv, err := e2b.New(svc, pools, ks, e2b.Config{Domain: cfg.domain, Secret: cl.Secret(), Cluster: cl, Log: log, Registry: reg})
	if err != nil {
		return err
	}
	defer e2bSrv.Close()
	srv := &http.Server{
		Handler:           e2bSrv.Handler(mux),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	storeName := "SQLite"
	if cfg.store != "" {
		storeName = "PostgreSQL"
	}
	fmt.Fprintf(stderr, "sandpool: serving on http://%s (data %s, node %s, store %s, egress %s, build %s)\n", ln.Addr(), cfg.data, cfg.node, storeName,
		cfg.egress.String(), build)

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", cfg.shutdownTimeout)
	mcpSrv.Close() // MCP sessions end, their sandboxes go through the API: before it drains
	dash.Close()   // live streams and terminals end (Shutdown would wait for them)
	apiSrv.Drain()
	e2bSrv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut off at the shutdown timeout", "err", err)
		srv.Close()
	}
	log.Info("stopped; sandboxes keep running and are found again at the next start")
	return nil
}

// discoverGPUs finds the host's GPUs and keeps those --gpus names. A host
// without GPUs is fine (GPU requests are then refused clearly); --gpus
// naming one that is not there is not.
func discoverGPUs(ctx context.Context, cfg serveConfig, log *slog.Logger) (gpu.Host, error) {
	host, err := gpu.Discover(ctx, gpu.Options{Root: cfg.gpuRoot})
	if err != nil {
		if cfg.gpuRoot != "/" || (cfg.gpus != "all" && cfg.gpus != "none") {
			return gpu.Host{}, fmt.Errorf("--gpus: %w", err)
		}
		log.Warn("looking for GPUs failed; none will be handed out", "err", err)
		return gpu.Host{}, nil
	}
	selected, err := host.Select(cfg.gpus)
	if err != nil {
		return gpu.Host{}, fmt.Errorf("--gpus %s: %w", cfg.gpus, err)
	}
	found := len(host.GPUs)
	host.GPUs = selected
	if found == 0 {
		log.Info("no GPUs found")
		return host, nil
	}
	for _, g := range host.GPUs {
		log.Info("GPU handed out", "index", g.Index, "uuid", g.UUID, "model", g.Model, "memory_bytes", g.MemoryBytes)
	}
	log.Info("GPUs", "found", found, "handed_out", len(selected), "sharing", cfg.gpuSharing, "driver", host.Driver,
		"libraries", len(host.Libraries), "tools", len(host.Tools))
	for _, n := range host.Notes {
		log.Warn("GPUs: " + n)
	}
	return host, nil
}

// ensureAdminKey makes the first admin key on a fresh database and writes
// it to <data>/admin.key (mode 0600), where the CLI finds it.
func ensureAdminKey(ctx context.Context, ks *keys.Keys, data string, stderr io.Writer) error {
	path := filepath.Join(data, adminKeyFile)
	secret, err := ks.EnsureAdmin(ctx, func(secret string) error {
		return os.WriteFile(path+".tmp", []byte(secret+"\n"), 0o600)
	})
	if err != nil {
		os.Remove(path + ".tmp")
		return fmt.Errorf("admin key: %w", err)
	}
	if secret == "" {
		return nil // keys exist already
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("write admin key: %w", err)
	}
	fmt.Fprintf(stderr, "sandpool: created an admin API key in %s (the CLI reads it from there)\n", path)
	return nil
}
