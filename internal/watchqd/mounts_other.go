//go:build !linux

package watchqd

import (
	"context"
	"log/slog"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
)

// newMountSource returns nil off Linux: watch-mount and watch-sb are
// ENODEV (mount namespaces and fanotify are Linux's).
func newMountSource(context.Context, *watchq.Engine, *slog.Logger) daemon.MountSource { return nil }
