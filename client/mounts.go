package client

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/mount"
)

// absPath makes path absolute against this process's working directory:
// the daemon resolves paths in the client's mount namespace, from its
// root, and knows nothing of the client's working directory.
func absPath(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("client: empty path")
	}
	return filepath.Abs(path)
}

// WatchMount is watch_mount(2) through the daemon: records about the mounts
// at and below directory path, in this process's mount namespace (the
// daemon looks the path up and watches there, never in its own), delivered
// with tag. As in-process (mount.Source.WatchMount): unmounting the
// directory's mount ends the watch with a removal record; EACCES when the
// policy does not grant watch=mounts or the directory is not searchable;
// EBUSY for a second watch on it; ENODEV when the daemon runs without its
// mount source.
func (q *Queue) WatchMount(ctx context.Context, path string, tag record.Tag) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	_, _, err = q.c.do(ctx, protocol.WatchMount{Queue: q.id, Tag: record.TagArg(tag), Path: p})
	return err
}

// UnwatchMount removes the watch on directory path, posting its removal
// record. EBADSLT: no watch.
func (q *Queue) UnwatchMount(ctx context.Context, path string) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	_, _, err = q.c.do(ctx, protocol.WatchMount{Queue: q.id, Tag: record.RemoveWatch, Path: p})
	return err
}

// WatchSuperblock is watch_sb(2) through the daemon: records about the
// filesystem path is on, in this process's mount namespace (read-only
// transitions, and errors where FAN_FS_ERROR reports them), under the
// policy's watch=fs-errors. An error matching mount.ErrNoFSErrors means
// the watch is in place but reports read-only transitions only, as
// in-process.
func (q *Queue) WatchSuperblock(ctx context.Context, path string, tag record.Tag) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	body, _, err := q.c.do(ctx, protocol.WatchSuperblock{Queue: q.id, Tag: record.TagArg(tag), Path: p})
	if err != nil {
		return err
	}
	r, err := protocol.ParseMountWatchReply(body)
	if err != nil {
		return err
	}
	if r.Flags&protocol.MountNoFSErrors != 0 {
		return fmt.Errorf("%w (watchqd: %s)", mount.ErrNoFSErrors, r.Reason)
	}
	return nil
}

// UnwatchSuperblock removes the watch on the filesystem path is on.
func (q *Queue) UnwatchSuperblock(ctx context.Context, path string) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	_, _, err = q.c.do(ctx, protocol.WatchSuperblock{Queue: q.id, Tag: record.RemoveWatch, Path: p})
	return err
}
