// Command watchq watches Linux key and device notifications through a
// watchq queue and prints them in the format of the kernel's sample
// program (samples/watch_queue/watch_test.c) or as JSON lines; it also
// decodes captured record streams and shows the watchqd daemon's
// statistics. "watchq help" lists the commands; man/watchq.1 documents
// them.
//
// The man pages and completion scripts are generated from the commands:
//
//go:generate go run . gen-docs --man ../../man --completion ../../completion
package main

import (
	"os"

	"github.com/watchq/watchq/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
