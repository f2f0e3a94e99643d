package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
)

// stamps masks the timestamps of the line and JSON formats, the one part
// of their output a golden line cannot hold.
var stamps = regexp.MustCompile(`^\d{4}-\d\d-\d\dT[0-9:.]+Z |"ts":"[^"]+"`)

func unstamp(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = stamps.ReplaceAllStringFunc(l, func(s string) string {
			if strings.HasPrefix(s, `"ts"`) {
				return `"ts":TS`
			}
			return "TS "
		})
	}
	return out
}

// TestWatchFormats runs the real binary once per --format on a real key
// change (a key linked into the session keyring, polled) and on a real
// loop device's attach (in-process uevents), and compares the output line
// for line with the golden form each format promises (docs/cli.md): the
// kernel sample's lines, keyctl watch's, the line format's one line and
// the JSON schema's object. keyctl watch knows only keys: device records
// print nothing in that format.
func TestWatchFormats(t *testing.T) {
	formats := []string{"line", "sample", "keyctl", "json"}

	t.Run("keys", func(t *testing.T) {
		sess := keySession(t) // on the subtest's goroutine: keyrings are per thread
		ps := map[string]*proc{}
		for _, f := range formats {
			ps[f] = start(t, "watch", "keys", "--backend=poll", "--interval=50ms", "--count=1", "--timeout=60s", "--format", f, "@s")
			ps[f].waitReady()
		}
		k := addKey(t, "user", "watchq-formats", "v", unix.KEY_SPEC_SESSION_KEYRING)
		want := map[string][]string{
			"line":   {fmt.Sprintf("TS key %d linked key=%d tag=1", sess, k)},
			"sample": keyLines(16, 2, 1, uint32(sess), "linked", uint32(k)),
			"keyctl": {fmt.Sprintf("%d link %d", sess, k)},
			"json": {fmt.Sprintf(`{"v":1,"ts":TS,"type":"key","ty":1,"event":"linked","sy":2,"info":272,"tag":1,"len":16,"key_id":%d,"aux":%d}`,
				sess, k)},
		}
		for _, f := range formats {
			if code := ps[f].wait(); code != 0 {
				t.Errorf("--format %s: exit %d", f, code)
			}
			if got := unstamp(ps[f].lines()); !slices.Equal(got, want[f]) {
				t.Errorf("--format %s:\n%s\nwant\n%s", f, strings.Join(got, "\n"), strings.Join(want[f], "\n"))
			}
		}
	})

	t.Run("devices", func(t *testing.T) {
		testenv.RequireRoot(t)
		none := filepath.Join(t.TempDir(), "none.sock") // no daemon: the in-process source
		ps := map[string]*proc{}
		for _, f := range formats {
			ps[f] = start(t, "watch", "devices", "--socket", none, "--filter", "block:change", "--format", f)
			ps[f].waitReady()
		}
		file := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(file, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		loop := devtest.AttachLoop(t, file, 0)
		ma, mi := loop.Dev>>20, loop.Dev&0xfffff
		n := 24 + len(loop.Name) // a lifecycle record: 24 bytes, then the name
		// The attach: a change with the 2048-sector size. Other tests'
		// loop devices may show up too; only this device's lines count.
		want := map[string][]string{
			"line": {fmt.Sprintf("TS block %s (%d:%d) change size=2048 tag=4", loop.Name, ma, mi)},
			"sample": {fmt.Sprintf("read() = %d", n), fmt.Sprintf("NOTIFY[000]: ty=000002 sy=82 i=0000%02x%02x", 4, n),
				fmt.Sprintf("BLOCK %08x e=130[change] s=800 %s", loop.Dev, loop.Name)},
			"json": {fmt.Sprintf(`{"v":1,"ts":TS,"type":"block","ty":2,"event":"change","sy":130,"info":%d,"tag":4,"len":%d,"dev":"%d:%d","major":%d,"minor":%d,"size":2048,"partition":false,"name":"%s"}`,
				4<<8|n, n, ma, mi, ma, mi, loop.Name)},
		}
		mine := func(f string, out []string) []string {
			var got []string
			for i, l := range out {
				switch f {
				case "sample":
					if strings.HasPrefix(l, fmt.Sprintf("BLOCK %08x e=130", loop.Dev)) && i >= 2 {
						got = append(got, out[i-2:i+1]...)
					}
				default:
					if strings.Contains(l, fmt.Sprintf("%d:%d", ma, mi)) {
						got = append(got, l)
					}
				}
			}
			return unstamp(got)
		}
		for _, f := range []string{"line", "sample", "json"} {
			ps[f].waitFor("the attach in --format "+f, 20*time.Second, func(out, _ []string) bool { return len(mine(f, out)) > 0 })
		}
		loop.Detach(t)
		for _, f := range []string{"line", "sample", "json"} {
			ps[f].waitFor("the detach in --format "+f, 20*time.Second, func(out, _ []string) bool { return len(mine(f, out)) > 1 })
			if got := mine(f, ps[f].lines()); len(got) < len(want[f]) || !slices.Equal(got[:len(want[f])], want[f]) {
				t.Errorf("--format %s:\n%s\nwant first\n%s", f, strings.Join(got, "\n"), strings.Join(want[f], "\n"))
			}
		}
		if out := ps["keyctl"].lines(); len(out) != 0 {
			t.Errorf("--format keyctl printed device records:\n%s", strings.Join(out, "\n"))
		}
	})
}
