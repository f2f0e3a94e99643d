//go:build linux

package daemon_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/internal/testenv"
)

// TestCReader: a C program compiled against <linux/watch_queue.h> reads
// the pipe watchqd hands out with plain read(2) and decodes every record:
// one record per read, the kernel's header, tag and removal record.
func TestCReader(t *testing.T) {
	gcc := testenv.RequireCommand(t, "gcc")
	testenv.RequireFile(t, "/usr/include/linux/watch_queue.h")
	bin := filepath.Join(t.TempDir(), "readpipe")
	if out, err := exec.Command(gcc, "-Wall", "-Werror", "-O2", "-o", bin, "../testdata/daemon/readpipe.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	e := startDaemon(t, "* watch=0x800020 publish=0x800020\n", "-devices", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.dial(t)
	q, err := c.CreateQueue(ctx, 32, client.ReadSize(0)) // a plain read(2) program
	if err != nil {
		t.Fatal(err)
	}
	if err := q.WatchPublisher(ctx, 0x800020, 5); err != nil {
		t.Fatal(err)
	}
	f, err := q.OpenFile()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin)
	cmd.ExtraFiles = []*os.File{f} // fd 3
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for i := range 3 {
		if err := c.Publish(ctx, pubRecord(0x800020, uint8(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.UnwatchPublisher(ctx, 0x800020); err != nil {
		t.Fatal(err)
	}
	// Closing the queue closes the daemon's write end: the C reader sees
	// end of file after the last record.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("readpipe: %v\n%s", err, out.String())
	}
	want := `read() = 16
NOTIFY[000]: ty=800020 sy=00 i=00000510
USER tag=5 payload=seq00000
read() = 16
NOTIFY[000]: ty=800020 sy=01 i=00000510
USER tag=5 payload=seq00001
read() = 16
NOTIFY[000]: ty=800020 sy=02 i=00000510
USER tag=5 payload=seq00002
read() = 16
NOTIFY[000]: ty=000000 sy=00 i=00000510
REMOVAL of watchpoint 00000005 id=800020
-- END --
`
	if got := out.String(); got != want {
		t.Errorf("readpipe printed:\n%s\nwant:\n%s", got, want)
	}
}
