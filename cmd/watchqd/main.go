// Command watchqd is the watchq daemon: it hands notification queues to
// any local process as packet-mode pipes, fed by the watchq engine, the
// device source and authorised publishers, under the policy of
// watchqd.conf(5). See watchqd(8) and docs/daemon.md.
package main

import (
	"os"

	"github.com/watchq/watchq/internal/watchqd"
)

func main() { os.Exit(watchqd.Main(os.Args[1:])) }
