// Package envd holds the Go code generated from E2B's envd protocol
// definitions (proto/): the messages in process and filesystem, the
// Connect RPC handlers and clients in processconnect and
// filesystemconnect. internal/e2b serves them on sandpool's agent.
//
// The generated code is committed; regenerate it with go generate (see
// generate.sh for the tools it needs).
package envd

//go:generate ./generate.sh
