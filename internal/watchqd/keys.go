package watchqd

import (
	"context"
	"log/slog"
	"os"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/source/keys"
)

// KeysEnv turns watchqd's key source off ("off"); otherwise watchqd
// serves key watches where the traced backend loads (root, BPF, BTF, the
// syscall tracepoints) and runs without them, saying why, where it does
// not.
const KeysEnv = "WATCHQD_KEYS"

// openKeys opens the key source watchqd serves watch-key from: the traced
// backend, which sees every process's key calls, so that records reach
// unprivileged watchers on kernels without CONFIG_KEY_NOTIFICATIONS (with
// it, clients watch keys with the kernel itself). ctx ends it. nil means
// none: watch-key is then ENODEV.
func openKeys(ctx context.Context, eng *watchq.Engine, log *slog.Logger) *keys.Source {
	if os.Getenv(KeysEnv) == "off" {
		return nil
	}
	src, err := keys.Open(ctx, keys.Config{Engine: eng, Backend: keys.Traced})
	if err != nil {
		log.Warn("running without the key source", "err", err)
		return nil
	}
	return src // the ready line names it with its backend
}

// keyConfig sets cfg's key source to src, if there is one, and the
// backend server-stats reports for it.
func keyConfig(cfg *daemon.Config, src *keys.Source) {
	if src == nil {
		return // a nil *keys.Source in the interface would not be nil
	}
	cfg.Keys = src
	switch src.Backend() {
	case keys.Kernel:
		cfg.KeyBackend = protocol.KeyBackendKernel
	case keys.Poll:
		cfg.KeyBackend = protocol.KeyBackendPoll
	case keys.Traced:
		cfg.KeyBackend = protocol.KeyBackendTraced
	}
}
