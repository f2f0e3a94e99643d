package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

// parseBackend parses --backend.
func parseBackend(s string) (keys.Backend, error) {
	switch s {
	case "auto", "":
		return keys.Auto, nil
	case "kernel":
		return keys.Kernel, nil
	case "poll":
		return keys.Poll, nil
	case "traced":
		return keys.Traced, nil
	}
	return 0, usageError{fmt.Errorf("--backend %q: want auto, kernel, traced or poll", s)}
}

// kernelWhy says briefly why the kernel facility is unavailable, e.g.
// "kernel: CONFIG_WATCH_QUEUE missing: ENOPKG".
func kernelWhy(err error) string {
	var ns *kernel.NotSupportedError
	if !errors.As(err, &ns) {
		return err.Error()
	}
	s := "kernel: " + strings.TrimPrefix(ns.Missing.String(), "kernel ")
	if ns.Errno != 0 {
		s += ": " + unix.ErrnoName(ns.Errno)
	}
	return s
}

// pollCaveat ends the poll backend's banner: what it coalesces or
// cannot see within one interval, the rows of docs/keys.md's table
// (source/keys poll.go diffs /proc/keys and KEYCTL_READ between passes).
const pollCaveat = "; within one interval it coalesces updates and attribute changes, and misses" +
	" same-payload updates, same-value chown/setperm, an unlink and re-link, keyring_restrict" +
	" and most invalidations (seen as the gc removal); see docs/keys.md"

// watchKeys opens the key source and watches every key in ks with q.
func (o *watchOptions) watchKeys(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, ks []keyArg, stderr io.Writer) (source, string, error) {
	b, err := parseBackend(o.backend)
	if err != nil {
		return nil, "", err
	}
	if o.interval <= 0 {
		return nil, "", usageError{fmt.Errorf("--interval %v: must be positive", o.interval)}
	}
	daemonWhy := ""
	if daemonFirst(b, os.Geteuid()) {
		d, serials, derr := o.watchKeysDaemon(ctx, eng, q, ks, stderr)
		if derr == nil {
			fmt.Fprintf(stderr, "watchq: keys: traced backend through watchqd at %s (BPF on keyctl/add_key/request_key; "+
				"keys viewable only as possessor refused; gc and the kernel's own changes seen only for keys watchqd may view)\n", o.socket)
			var descs []string
			for i, k := range ks {
				descs = append(descs, o.keyDesc(k, serials[i]))
			}
			return d, "keys " + strings.Join(descs, ", "), nil
		}
		daemonWhy = dialError(o.socket, derr).Error()
		if b == keys.Traced {
			return nil, "", fmt.Errorf("keys: traced backend: %s; in-process it needs root", daemonWhy)
		}
	}
	src, err := keys.Open(ctx, keys.Config{Engine: eng, Backend: b, Interval: o.interval})
	if err != nil {
		if errors.Is(err, kernel.ErrNotSupported) {
			return nil, "", fmt.Errorf("keys: kernel backend unavailable (%s); try --backend=poll", kernelWhy(err))
		}
		if b == keys.Traced {
			return nil, "", fmt.Errorf("keys: %w; try --backend=poll", err)
		}
		return nil, "", fmt.Errorf("keys: %w", err)
	}
	switch got := src.Backend(); {
	case got == keys.Kernel:
		fmt.Fprintf(stderr, "watchq: keys: kernel backend (KEYCTL_WATCH_KEY on a notification pipe)\n")
	case got == keys.Traced:
		why := "--backend=traced"
		if b == keys.Auto {
			why = "no kernel facility"
			if perr := kernel.Probe(); perr != nil {
				why = kernelWhy(perr)
			}
		}
		fmt.Fprintf(stderr, "watchq: keys: traced backend (BPF on keyctl/add_key/request_key; gc and the kernel's own changes polled every %v) (%s)\n", o.interval, why)
	case b == keys.Poll:
		fmt.Fprintf(stderr, "watchq: keys: poll backend every %v (--backend=poll)%s\n", o.interval, pollCaveat)
	default:
		why := "kernel backend not chosen"
		if perr := kernel.Probe(); perr != nil {
			why = kernelWhy(perr)
		} else if os.Getenv(keys.BackendEnv) == "poll" {
			why = "$" + keys.BackendEnv + "=poll"
		}
		if daemonWhy != "" {
			why += "; traced: " + daemonWhy
		} else if ferr := src.Fallback(); ferr != nil {
			why += "; traced: " + ferr.Error()
		}
		fmt.Fprintf(stderr, "watchq: keys: poll backend every %v (%s)%s\n", o.interval, why, pollCaveat)
	}
	var descs []string
	for _, k := range ks {
		serial := k.id
		if k.id < 0 {
			// Resolve a special id for the message; Watch resolves it
			// the same way.
			id, err := keys.Resolve(k.id)
			if err != nil {
				src.Close()
				return nil, "", fmt.Errorf("resolve %s: %w", k.spec, err)
			}
			serial = id
		}
		if err := src.Watch(q, serial, k.tag, nil); err != nil {
			src.Close()
			return nil, "", fmt.Errorf("keys: watch %s: %w", k.spec, err)
		}
		descs = append(descs, o.keyDesc(k, serial))
	}
	return src, "keys " + strings.Join(descs, ", "), nil
}

// keyDesc describes the watch of k (resolved to serial) for the banner,
// and names its tag for removal lines.
func (o *watchOptions) keyDesc(k keyArg, serial int32) string {
	if o.keyWatches == nil {
		o.keyWatches = map[record.Tag]int{}
	}
	o.keyWatches[k.tag]++
	o.names[k.tag] = fmt.Sprintf("key %d (%s)", serial, k.spec)
	if k.spec == fmt.Sprint(serial) {
		o.names[k.tag] = fmt.Sprintf("key %d", serial)
	}
	return keyText(k, serial)
}

// keyText describes k's watch of the key serial: its spec, serial and tag.
func keyText(k keyArg, serial int32) string {
	d := fmt.Sprintf("%08x", uint32(serial))
	if k.spec != fmt.Sprint(serial) {
		d = k.spec + " " + d
	}
	return fmt.Sprintf("%s tag %d", d, k.tag)
}
