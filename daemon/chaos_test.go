//go:build linux

package daemon_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/daemon/protocol"
)

// chaosFor is how long TestChaos's clients run.
const chaosFor = 6 * time.Second

// TestChaos: two granted and two ungranted users, two processes each,
// connect, create, size, filter and close queues (some by closing only
// the pipe), watch, publish, leave queues full, send garbage, zero-length
// packets and file descriptors, and hold silent connections, all at once
// (roleChaos); the test kills them with SIGKILL at random and starts
// others, and reloads the configuration with SIGHUP in between (a broken
// one among them). Afterwards the daemon is still running, serves a fresh
// client within 1 s, reports no race, and its descriptors and goroutines
// are back to (at most) their baseline, its heap within 2 MiB of it, and
// every charge given back.
func TestChaos(t *testing.T) {
	users := []*testUser{newUser(t, "cg0"), newUser(t, "cg1"), newUser(t, "cu0"), newUser(t, "cu1")}
	const first, types = 0x800a00, 8
	grants := func(grantAll bool) string {
		var b strings.Builder
		for i, u := range users {
			if i < 2 || grantAll {
				fmt.Fprintf(&b, "user=%s watch=0x800a00-0x800a07 publish=0x800a00-0x800a07\n", u.name)
			}
		}
		b.WriteString("limits * connections=8 queues=24 pages=1200 watches=64 publish-rate=5000 publish-burst=500\n")
		return b.String()
	}
	confs := []string{grants(false), grants(true), "user=nobody-here-at-all watch=usb\n" /* broken: kept out */}
	e := startDaemon(t, confs[0], "-devices", "off", "-hello-timeout", "1s", "-pipe-slots", "8")
	root := dialRaw(t, e.sock).hello(t)
	// A first round of every request, so that what the daemon keeps
	// for good (pools, map buckets) is in the baseline.
	e.probe(t, users[0], "0x800a00", 2*time.Second)
	waitFor(t, "the first probe gone", func() bool { return root.serverStats(t, false).Clients == 1 })
	base := root.serverStats(t, true)
	baseFDs := e.fds(t)
	baseRSS := e.rss(t)

	// WATCHQD_CHAOS_SEED replays a run.
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("WATCHQD_CHAOS_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (WATCHQD_CHAOS_SEED)", seed)
	rng := newRand(seed)
	var kids []*child
	spawn := func(i int) {
		k := e.spawn(t, users[i%len(users)], "chaos", fmt.Sprint(rng.Uint64()), fmt.Sprint(first), fmt.Sprint(types))
		expectPrefix(t, k, "CHAOS up")
		kids = append(kids, k)
	}
	for i := range 2 * len(users) {
		spawn(i)
	}
	kills, reloads := 0, 0
	for end := time.Now().Add(chaosFor); time.Now().Before(end); {
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		if rng.IntN(4) == 0 {
			e.reload(t, confs[rng.IntN(len(confs))])
			reloads++
			continue
		}
		i := rng.IntN(len(kids))
		kids[i].cmd.Process.Signal(syscall.SIGKILL)
		kids[i].cmd.Wait()
		kids = append(kids[:i], kids[i+1:]...)
		kills++
		spawn(i + kills)
	}
	for _, k := range kids {
		k.cmd.Process.Signal(syscall.SIGKILL)
		k.cmd.Wait()
	}
	e.alive(t)
	mid := root.serverStats(t, false)
	t.Logf("%d kills, %d reloads; daemon: %d clients, %d queues, %d watches, %d goroutines, %d fds, heap %d KiB; %d throttled, %d refused, %d timed out, %d lost at close",
		kills, reloads, mid.Clients, mid.AllQueues, mid.AllWatches, mid.Goroutines, mid.FDs, mid.Heap>>10, mid.Throttled, mid.Rejected, mid.TimedOut, mid.CloseLost)

	e.reload(t, confs[0])
	e.probe(t, users[0], "0x800a01", time.Second)

	var s protocol.ServerStats
	back := func() bool {
		s = root.serverStats(t, true)
		return s.Clients == 1 && s.AllQueues == 0 && s.AllPages == 0 && s.AllWatches == 0 && s.Users == 1 &&
			s.Goroutines <= base.Goroutines && e.fds(t) <= baseFDs && s.Heap < base.Heap+2<<20
	}
	for deadline := time.Now().Add(10 * time.Second); !back(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not back to baseline:\n%+v\nbaseline:\n%+v\nfds %d, baseline %d:\n%s", s, base, e.fds(t), baseFDs, e.fdList())
		}
	}
	// RSS: not under the race detector, which keeps its shadow memory.
	if !raceEnabled {
		waitFor(t, "RSS back to baseline", func() bool { return e.rss(t) < baseRSS+16<<20 })
	}
	t.Logf("baseline: %d goroutines, %d fds, heap %d KiB, RSS %d MiB; after: %d goroutines, %d fds, heap %d KiB, RSS %d MiB (race detector: %v)",
		base.Goroutines, baseFDs, base.Heap>>10, baseRSS>>20, s.Goroutines, e.fds(t), s.Heap>>10, e.rss(t)>>20, raceEnabled)
	if strings.Contains(e.Log(), "DATA RACE") {
		t.Errorf("the race detector reported a race in watchqd:\n%s", e.Log())
	}
}
