//go:build tools

// Package deps pins the modules the project builds on before every package uses them.
package deps

import (
	_ "github.com/cilium/ebpf"
	_ "github.com/coreos/go-systemd/v22/activation"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/mdlayher/socket"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/sys/unix"
)
