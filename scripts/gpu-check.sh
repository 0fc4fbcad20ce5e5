#!/bin/sh
# gpu-check.sh: check GPU sandboxes on a machine with an NVIDIA GPU.
#
#   scripts/gpu-check.sh BINARY [--oci-layout DIR]
#
# Builds nothing: BINARY is a sandpool built elsewhere. As root, it starts
# `sandpool serve` on a throwaway data directory, makes a sandbox with one
# GPU and runs in it `nvidia-smi -L` and CUDA driver calls through
# /usr/bin/python3 and ctypes (cuInit, cuDeviceGetCount, cuCtxCreate,
# cuMemAlloc of 1 MiB, a copy there and back, cuMemFree); checks that a
# sandbox without a GPU sees none; with --oci-layout, does the same in a
# sandbox of an image template made from that OCI layout (an image with
# /usr/bin/python3, whose CUDA programs find the host's driver in
# /usr/local/nvidia); then deletes its sandboxes, stops the server and
# removes the data directory. It exits non-zero on any failure and says
# which check failed.
#
# GPU_CHECK_SERVE_FLAGS adds flags to `sandpool serve`: a dry run of this
# script on a machine without a GPU points it at stand-in devices with
# "--gpu-root DIR" (the CUDA checks then fail, as they must).
set -eu

usage() {
	echo "usage: $0 BINARY [--oci-layout DIR]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
BIN=$1
shift
LAYOUT=
while [ $# -gt 0 ]; do
	case $1 in
	--oci-layout)
		[ $# -ge 2 ] || usage
		LAYOUT=$2
		shift 2
		;;
	*) usage ;;
	esac
done
case $BIN in
/*) ;;
*) BIN=$(pwd)/$BIN ;;
esac
[ -x "$BIN" ] || { echo "gpu-check: $BIN is not an executable" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "gpu-check: run as root (sandpool serve needs it)" >&2; exit 2; }

DATA=$(mktemp -d /tmp/sandpool-gpu-check.XXXXXX)
LOG=$DATA.log
CGROUP=sandpool-gpu-check-$$
SERVER=
FAILED=0
SANDBOXES=

say() { echo "gpu-check: $*"; }
fail() {
	echo "gpu-check: FAIL: $*" >&2
	FAILED=1
}

# cleanup deletes the sandboxes through the API (they outlive the server
# by design), stops the server and removes the data directory.
cleanup() {
	status=$?
	set +e
	if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
		for id in $SANDBOXES; do
			"$BIN" sandbox rm "$id" >/dev/null 2>&1 || echo "gpu-check: could not delete $id" >&2
		done
		kill -TERM "$SERVER"
		i=0
		while kill -0 "$SERVER" 2>/dev/null && [ $i -lt 300 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 "$SERVER" 2>/dev/null; then
			echo "gpu-check: the server did not stop on SIGTERM; killing it" >&2
			kill -KILL "$SERVER"
			status=1
		fi
		wait "$SERVER" 2>/dev/null
	fi
	if [ "$status" != 0 ] || [ "$FAILED" != 0 ]; then
		echo "gpu-check: the server's log:" >&2
		sed 's/^/  | /' "$LOG" >&2 2>/dev/null
	fi
	rm -rf "$DATA" "$LOG"
	for c in /sys/fs/cgroup/"$CGROUP" /sys/fs/cgroup/*/"$CGROUP"; do
		[ -d "$c" ] && rmdir "$c" 2>/dev/null
	done
	if [ "$status" = 0 ] && [ "$FAILED" != 0 ]; then
		status=1
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086 # GPU_CHECK_SERVE_FLAGS is split into flags
"$BIN" serve --listen 127.0.0.1:0 --data "$DATA" --cgroup-parent "$CGROUP" --node gpu-check ${GPU_CHECK_SERVE_FLAGS:-} >"$LOG" 2>&1 &
SERVER=$!
URL=
i=0
while [ -z "$URL" ] && [ $i -lt 600 ]; do
	if ! kill -0 "$SERVER" 2>/dev/null; then
		echo "gpu-check: sandpool serve exited at start" >&2
		exit 1
	fi
	URL=$(sed -n 's/^sandpool: serving on \(http:[^ ]*\).*/\1/p' "$LOG" | head -n 1)
	[ -n "$URL" ] || sleep 0.1
	i=$((i + 1))
done
[ -n "$URL" ] || { echo "gpu-check: sandpool serve did not start within 60s" >&2; exit 1; }
SANDPOOL_URL=$URL
SANDPOOL_API_KEY=$(cat "$DATA/admin.key")
export SANDPOOL_URL SANDPOOL_API_KEY
say "server at $URL (data $DATA)"

# node prints GET /v1/node (python3, not curl: it is there for the CUDA
# check anyway).
node() {
	/usr/bin/python3 -c 'import os, urllib.request
r = urllib.request.Request(os.environ["SANDPOOL_URL"] + "/v1/node", headers={"Authorization": "Bearer " + os.environ["SANDPOOL_API_KEY"]})
print(urllib.request.urlopen(r, timeout=30).read().decode())'
}

# The node must have found a GPU.
NODE=$(node)
GPUS=$(printf '%s' "$NODE" | /usr/bin/python3 -c 'import json,sys; n=json.load(sys.stdin); print(len(n.get("gpus") or []))')
if [ "$GPUS" -lt 1 ]; then
	fail "the node found no GPU: $NODE"
	exit 1
fi
say "node: $GPUS GPU(s): $(printf '%s' "$NODE" | /usr/bin/python3 -c 'import json,sys; print("; ".join("%d %s %s" % (g["index"], g.get("model",""), g.get("uuid","")) for g in json.load(sys.stdin)["gpus"]))')"

# cuda.py: CUDA driver calls through ctypes. "expect=1": one device, a
# context, 1 MiB allocated, written, read back and freed. "expect=0": no
# device usable (cuInit fails, or finds none).
CUDA_PY='
import ctypes, sys
expect = int(sys.argv[1].split("=")[1])
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as e:
    print("no libcuda:", e)
    sys.exit(0 if expect == 0 else 1)
r = cuda.cuInit(0)
if expect == 0:
    n = ctypes.c_int(0)
    if r == 0:
        cuda.cuDeviceGetCount(ctypes.byref(n))
    print("cuInit", r, "devices", n.value)
    sys.exit(0 if r != 0 or n.value == 0 else 1)
def check(name, r):
    if r != 0:
        print(name, "failed:", r)
        sys.exit(1)
check("cuInit", r)
n = ctypes.c_int(0)
check("cuDeviceGetCount", cuda.cuDeviceGetCount(ctypes.byref(n)))
if n.value != 1:
    print("cuDeviceGetCount:", n.value, "devices, want 1")
    sys.exit(1)
dev = ctypes.c_int(0)
check("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(dev), 0))
name = ctypes.create_string_buffer(256)
check("cuDeviceGetName", cuda.cuDeviceGetName(name, 256, dev))
ctx = ctypes.c_void_p()
cuda.cuCtxCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint, ctypes.c_int]
check("cuCtxCreate", cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev))
size = 1 << 20
ptr = ctypes.c_uint64()
cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
check("cuMemAlloc", cuda.cuMemAlloc_v2(ctypes.byref(ptr), size))
src = ctypes.create_string_buffer(bytes(range(256)) * (size // 256), size)
dst = ctypes.create_string_buffer(size)
cuda.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
cuda.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
check("cuMemcpyHtoD", cuda.cuMemcpyHtoD_v2(ptr, src, size))
check("cuMemcpyDtoH", cuda.cuMemcpyDtoH_v2(dst, ptr, size))
if dst.raw != src.raw:
    print("the copy back differs")
    sys.exit(1)
cuda.cuMemFree_v2.argtypes = [ctypes.c_uint64]
check("cuMemFree", cuda.cuMemFree_v2(ptr))
cuda.cuCtxDestroy_v2.argtypes = [ctypes.c_void_p]
check("cuCtxDestroy", cuda.cuCtxDestroy_v2(ctx))
print("ok:", name.value.decode(), "1 MiB allocated, copied there and back, freed")
'

# check_gpu_sandbox TEMPLATE: a sandbox of TEMPLATE with one GPU works.
check_gpu_sandbox() {
	tpl=$1
	if ! id=$("$BIN" sandbox create --template "$tpl" --gpus 1); then
		fail "$tpl: create a sandbox with one GPU"
		return
	fi
	SANDBOXES="$SANDBOXES $id"
	say "$tpl: sandbox $id with one GPU"
	devs=$("$BIN" exec "$id" -- sh -c 'cd /dev && ls -d nvidia*') || true
	say "$tpl: its /dev: $(echo "$devs" | tr '\n' ' ')"
	[ "$(echo "$devs" | grep -c '^nvidia[0-9]')" = 1 ] || fail "$tpl: want exactly one /dev/nvidiaN, got: $devs"
	# shellcheck disable=SC2016 # expanded in the sandbox
	env=$("$BIN" exec "$id" -- sh -c 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"') || true
	say "$tpl: $env"
	case $env in
	*CUDA_VISIBLE_DEVICES=?*NVIDIA_VISIBLE_DEVICES=?*) ;;
	*) fail "$tpl: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES are not set" ;;
	esac
	if smi=$("$BIN" exec "$id" -- nvidia-smi -L 2>&1); then
		say "$tpl: nvidia-smi -L: $smi"
		[ "$(echo "$smi" | grep -c '^GPU [0-9]')" = 1 ] || fail "$tpl: nvidia-smi -L lists $(echo "$smi" | grep -c '^GPU [0-9]') GPUs, want 1"
	else
		fail "$tpl: nvidia-smi -L: $smi"
	fi
	if out=$("$BIN" exec "$id" -- /usr/bin/python3 -c "$CUDA_PY" expect=1 2>&1); then
		say "$tpl: CUDA: $out"
	else
		fail "$tpl: CUDA driver calls: $out"
	fi
	# As the sandbox's root as well (no capabilities either way).
	if ! out=$("$BIN" exec --user root "$id" -- /usr/bin/python3 -c "$CUDA_PY" expect=1 2>&1); then
		fail "$tpl: CUDA driver calls as root: $out"
	fi
}

check_gpu_sandbox base

# A sandbox without a GPU sees none.
if plain=$("$BIN" sandbox create); then
	SANDBOXES="$SANDBOXES $plain"
	n=$("$BIN" exec "$plain" -- sh -c 'ls -d /dev/nvidia* 2>/dev/null | wc -l') || true
	[ "$n" = 0 ] || fail "a sandbox without a GPU has $n NVIDIA nodes in /dev"
	if out=$("$BIN" exec "$plain" -- /usr/bin/python3 -c "$CUDA_PY" expect=0 2>&1); then
		say "no GPU: $out"
	else
		fail "a sandbox without a GPU reached one: $out"
	fi
	if "$BIN" exec "$plain" -- nvidia-smi -L >/dev/null 2>&1; then
		fail "nvidia-smi -L works in a sandbox without a GPU"
	fi
else
	fail "create a sandbox without a GPU"
fi

if [ -n "$LAYOUT" ]; then
	if "$BIN" template add gpu-check-image --oci-layout "$LAYOUT" >/dev/null; then
		check_gpu_sandbox gpu-check-image
	else
		fail "add an image template from $LAYOUT"
	fi
fi

# Every GPU is free again once the sandboxes are gone (checked by the
# node's own account).
for id in $SANDBOXES; do
	"$BIN" sandbox rm "$id" >/dev/null || fail "delete $id"
done
SANDBOXES=
held=$(node | /usr/bin/python3 -c 'import json,sys; print(sum(len(g.get("sandboxes") or []) for g in json.load(sys.stdin)["gpus"]))')
[ "$held" = 0 ] || fail "$held GPU holders left after every sandbox was deleted"

if [ "$FAILED" = 0 ]; then
	say "PASS"
fi
