package client_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/watchqtest"
)

// TestMountRequestBounds: over a real socket, a watch-mount path past
// PATH_MAX-1 bytes is ENAMETOOLONG and one past the request size EMSGSIZE,
// both before the daemon looks for a mount source (watchqtest's daemon has
// none: ENODEV for a well-formed request), and the connection stays usable.
func TestMountRequestBounds(t *testing.T) {
	d := watchqtest.StartDaemon(t, "* watch=mounts,fs-errors\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want syscall.Errno
	}{
		{"/" + strings.Repeat("a", 4095), syscall.ENAMETOOLONG},
		{"/" + strings.Repeat("a", 5000), syscall.EMSGSIZE},
		{"/srv", syscall.ENODEV},
	} {
		err := q.WatchMount(ctx, tc.path, 2)
		var ce *client.Error
		if !errors.Is(err, tc.want) || !errors.As(err, &ce) || ce.Reason == "" {
			t.Errorf("watch-mount of a %d-byte path: %v, want %v with a reason", len(tc.path), err, tc.want)
		}
		if err := q.WatchSuperblock(ctx, tc.path, 3); !errors.Is(err, tc.want) {
			t.Errorf("watch-sb of a %d-byte path: %v, want %v", len(tc.path), err, tc.want)
		}
	}
}
