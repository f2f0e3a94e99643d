// Package policy is watchqd's access control: the rules of watchqd.conf(5)
// and the watchq.Policy built from them.
//
// The model is USBGuard's IPC access control: each rule names a subject
// (a user, a group, an LSM label, or everyone) and grants it privileges
// (watching device record classes and publisher types, publishing types).
// Grants add up over every rule whose subject matches; anything not
// granted is denied.
package policy

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

// subjectKind says what a rule's subject matches.
type subjectKind uint8

const (
	subjectAll   subjectKind = iota // "*": every client
	subjectUID                      // user=NAME|UID
	subjectGID                      // group=NAME|GID: primary or supplementary
	subjectLabel                    // label=LABEL: the exact LSM label
)

// typeRange is an inclusive range of publisher types.
type typeRange struct{ lo, hi record.Type }

// rule is one line of the file.
type rule struct {
	line    int
	text    string // the subject as written, for reasons
	kind    subjectKind
	id      uint32
	label   string
	devices protocol.Sources // device record classes it may watch
	classes MountClass       // mount source classes it may watch
	watch   []typeRange      // publisher types it may watch
	publish []typeRange      // publisher types it may publish
}

// matches reports whether the rule's subject is c.
func (r *rule) matches(c *watchq.Cred) bool {
	switch r.kind {
	case subjectAll:
		return true
	case subjectUID:
		return c.UID == r.id
	case subjectGID:
		return c.InGroup(r.id)
	case subjectLabel:
		return c.Label == r.label
	}
	return false
}

// Rules is a parsed configuration. It is immutable.
type Rules struct {
	// Source names where the rules came from, for reasons and logs.
	Source string
	rules  []rule
	limits []limitRule
}

// Len returns the number of rules, limits rules included.
func (rs *Rules) Len() int { return len(rs.rules) + len(rs.limits) }

// LookupFunc resolves user and group names to ids; Parse uses os/user
// when it is nil.
type LookupFunc func(kind, name string) (uint32, error)

func defaultLookup(kind, name string) (uint32, error) {
	var s string
	if kind == "user" {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, err
		}
		s = u.Uid
	} else {
		g, err := user.LookupGroup(name)
		if err != nil {
			return 0, err
		}
		s = g.Gid
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// Load reads and parses the file at path.
func Load(path string) (*Rules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	return Parse(f, path, nil)
}

// Parse reads rules from r; name is used in errors and reasons. The
// format is watchqd.conf(5): one rule per line,
//
//	SUBJECT GRANT...
//
// where SUBJECT is user=NAME|UID, group=NAME|GID, label=LABEL or *, and
// each GRANT is watch=ITEM[,ITEM...] or publish=TYPES[,TYPES...]. A watch
// item is usb, block-errors, block-lifecycle, devices (all three), mounts
// (mount topology watches), fs-errors (superblock watches), or a
// publisher type or range (0x800001, 0x800000-0x8000ff). A line
//
//	limits SUBJECT KEY=N...
//
// sets the subject's resource limits (see Limits; KEY is connections,
// queues, pages, watches, publish-rate or publish-burst; N a decimal
// integer from 0 to the ceiling MaxLimits gives). '#' starts a comment.
// Any error rejects the whole file.
func Parse(r io.Reader, name string, lookup LookupFunc) (*Rules, error) {
	if lookup == nil {
		lookup = defaultLookup
	}
	rs := &Rules{Source: name}
	sc := bufio.NewScanner(r)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("policy: %s:%d: %s", name, ln, fmt.Sprintf(format, args...))
		}
		if fields[0] == "limits" {
			lr, err := parseLimits(fields[1:], ln, lookup)
			if err != nil {
				return nil, bad("%v", err)
			}
			rs.limits = append(rs.limits, lr)
			continue
		}
		ru := rule{line: ln, text: fields[0]}
		if err := parseSubject(&ru, fields[0], lookup); err != nil {
			return nil, bad("%v", err)
		}
		if len(fields) == 1 {
			return nil, bad("subject %q grants nothing", fields[0])
		}
		for _, g := range fields[1:] {
			key, val, ok := strings.Cut(g, "=")
			if !ok || val == "" {
				return nil, bad("grant %q is not KEY=VALUE", g)
			}
			for item := range strings.SplitSeq(val, ",") {
				switch key {
				case "watch":
					switch item {
					case "usb":
						ru.devices |= protocol.SourceUSB
					case "block-errors":
						ru.devices |= protocol.SourceBlockErrors
					case "block-lifecycle":
						ru.devices |= protocol.SourceBlockLifecycle
					case "devices":
						ru.devices |= protocol.SourceDevices
					case "mounts", "fs-errors":
						ru.classes |= className[item]
					default:
						tr, err := parseRange(item)
						if err != nil {
							return nil, bad("watch item %q: %v", item, err)
						}
						ru.watch = append(ru.watch, tr)
					}
				case "publish":
					tr, err := parseRange(item)
					if err != nil {
						return nil, bad("publish item %q: %v", item, err)
					}
					ru.publish = append(ru.publish, tr)
				default:
					return nil, bad("unknown grant %q (want watch= or publish=)", key)
				}
			}
		}
		rs.rules = append(rs.rules, ru)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("policy: %s: %w", name, err)
	}
	return rs, nil
}

// parseLimits parses the fields after "limits": a subject and at least
// one KEY=N.
func parseLimits(fields []string, ln int, lookup LookupFunc) (limitRule, error) {
	if len(fields) == 0 {
		return limitRule{}, fmt.Errorf("limits: want a subject and KEY=N")
	}
	lr := limitRule{rule: rule{line: ln, text: fields[0]}}
	if err := parseSubject(&lr.rule, fields[0], lookup); err != nil {
		return limitRule{}, fmt.Errorf("limits: %v", err)
	}
	if len(fields) == 1 {
		return limitRule{}, fmt.Errorf("limits for %q set nothing", fields[0])
	}
	ceil := maxLimits
Fields:
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		if !ok || val == "" {
			return limitRule{}, fmt.Errorf("limit %q is not KEY=N", f)
		}
		for i, k := range limitKeys {
			if k.name != key {
				continue
			}
			if lr.set[i] {
				return limitRule{}, fmt.Errorf("limit %s given twice", key)
			}
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return limitRule{}, fmt.Errorf("limit %s=%q: want a decimal number", key, val)
			}
			if max := *k.f(&ceil); n > uint64(max) {
				return limitRule{}, fmt.Errorf("limit %s=%d is above the ceiling %d (limits are never unbounded)", key, n, max)
			}
			*k.f(&lr.lim) = int(n)
			lr.set[i] = true
			continue Fields
		}
		names := make([]string, len(limitKeys))
		for i, k := range limitKeys {
			names[i] = k.name
		}
		return limitRule{}, fmt.Errorf("unknown limit %q (want %s)", key, strings.Join(names, ", "))
	}
	return lr, nil
}

func parseSubject(ru *rule, s string, lookup LookupFunc) error {
	if s == "*" {
		ru.kind = subjectAll
		return nil
	}
	key, val, ok := strings.Cut(s, "=")
	if !ok || val == "" {
		return fmt.Errorf("subject %q: want user=, group=, label= or *", s)
	}
	switch key {
	case "user", "group":
		ru.kind = subjectUID
		if key == "group" {
			ru.kind = subjectGID
		}
		if n, err := strconv.ParseUint(val, 10, 32); err == nil {
			ru.id = uint32(n)
			return nil
		}
		id, err := lookup(key, val)
		if err != nil {
			return fmt.Errorf("subject %q: unknown %s: %v", s, key, err)
		}
		ru.id = id
	case "label":
		ru.kind = subjectLabel
		ru.label = val
	default:
		return fmt.Errorf("subject %q: want user=, group=, label= or *", s)
	}
	return nil
}

// parseRange parses a publisher type or an inclusive range LO-HI, each in
// the publisher range.
func parseRange(s string) (typeRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err := parseType(lo)
	if err != nil {
		return typeRange{}, err
	}
	h, err := parseType(hi)
	if err != nil {
		return typeRange{}, err
	}
	if l > h {
		return typeRange{}, fmt.Errorf("empty range %#x-%#x", uint32(l), uint32(h))
	}
	return typeRange{l, h}, nil
}

func parseType(s string) (record.Type, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	return record.ParsePublisherType(n)
}

func inRanges(rs []typeRange, t record.Type) bool {
	for _, r := range rs {
		if t >= r.lo && t <= r.hi {
			return true
		}
	}
	return false
}

// Devices returns the device record classes c may watch.
func (rs *Rules) Devices(c *watchq.Cred) protocol.Sources {
	var s protocol.Sources
	for i := range rs.rules {
		if r := &rs.rules[i]; r.devices != 0 && r.matches(c) {
			s |= r.devices
		}
	}
	return s
}

// MayWatch reports whether c may watch publisher type t.
func (rs *Rules) MayWatch(c *watchq.Cred, t record.Type) bool {
	for i := range rs.rules {
		if r := &rs.rules[i]; inRanges(r.watch, t) && r.matches(c) {
			return true
		}
	}
	return false
}

// MayPublish reports whether c may publish type t.
func (rs *Rules) MayPublish(c *watchq.Cred, t record.Type) bool {
	for i := range rs.rules {
		if r := &rs.rules[i]; inRanges(r.publish, t) && r.matches(c) {
			return true
		}
	}
	return false
}
