#!/usr/bin/env bash
# Regenerates the Go code for E2B's envd protocol (process.Process and
# filesystem.Filesystem) from the protos under proto/, which are E2B's
# (e2b-dev/E2B spec/envd, Apache License 2.0) with a go_package option added.
#
# Needs protoc (Debian: apt-get install protobuf-compiler) and the two
# plugins at the versions go.mod uses:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
# Run through `go generate ./internal/e2b/envd`.
set -euo pipefail
cd "$(dirname "$0")"
PATH="$(go env GOPATH)/bin:$PATH"
module=github.com/sandpool/sandpool
root=$(cd ../../.. && pwd)
protoc -I proto \
  --go_out="$root" --go_opt=module=$module \
  --connect-go_out="$root" --connect-go_opt=module=$module \
  process/process.proto filesystem/filesystem.proto
