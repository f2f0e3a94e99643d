package policy

import (
	"fmt"

	"github.com/watchq/watchq"
)

// Limits are the per-user resource limits watchqd enforces, modelled on
// the kernel's per-user accounting (struct user_struct): every connection,
// queue, page and watch a client holds is charged to its uid, and a
// request that would take the uid past its limit is refused before
// anything is allocated. docs/security.md explains each limit and the
// kernel limit it mirrors.
//
// The usage is per uid; the limit is that of the client making the
// request (its rules may depend on its groups and label), as the kernel
// checks a per-user count against the caller's own rlimit.
type Limits struct {
	// Connections is how many connections the uid may hold at once,
	// authenticated or not. Beyond it a new connection is refused with
	// EMFILE.
	Connections int
	// Queues is how many queues the uid may hold (EMFILE), the daemon's
	// counterpart of the notification pipes RLIMIT_NOFILE bounds. The
	// daemon also holds a client to its own RLIMIT_NOFILE soft limit.
	Queues int
	// Pages is how many pages the uid's queues may take (EPERM, as
	// pipe-user-pages-hard gives): a queue of N notes costs ceil(N/32)
	// pages (watch_queue_set_size's nr_pages), and its pipe the pages of
	// the daemon's -pipe-slots.
	Pages int
	// Watches is how many watches the uid may hold (EAGAIN), as
	// add_watch_to_object bounds user->nr_watches by the caller's
	// RLIMIT_NOFILE; the daemon also holds a client to its own
	// RLIMIT_NOFILE soft limit.
	Watches int
	// PublishRate is how many records per second the uid may publish,
	// sustained; PublishBurst how many at once (a token bucket). Over
	// the rate a publish is EAGAIN.
	PublishRate, PublishBurst int
}

// Built-in limits: for every uid but root, for root, and the most any
// rule may grant (limits are never unbounded).
var (
	defaultLimits = Limits{Connections: 32, Queues: 64, Pages: 4096, Watches: 1024, PublishRate: 1000, PublishBurst: 1000}
	rootLimits    = Limits{Connections: 256, Queues: 1024, Pages: 65536, Watches: 65536, PublishRate: 100000, PublishBurst: 10000}
	maxLimits     = Limits{Connections: 4096, Queues: 65536, Pages: 1 << 20, Watches: 1 << 20, PublishRate: 1000000, PublishBurst: 1000000}
)

// DefaultLimits returns the limits of a uid no limits rule names.
func DefaultLimits() Limits { return defaultLimits }

// RootLimits returns the limits of root when no limits rule names it.
func RootLimits() Limits { return rootLimits }

// MaxLimits returns the ceilings: no rule may set a limit above them.
func MaxLimits() Limits { return maxLimits }

// limitKeys names each limit as watchqd.conf writes it.
var limitKeys = [...]struct {
	name string
	f    func(*Limits) *int
}{
	{"connections", func(l *Limits) *int { return &l.Connections }},
	{"queues", func(l *Limits) *int { return &l.Queues }},
	{"pages", func(l *Limits) *int { return &l.Pages }},
	{"watches", func(l *Limits) *int { return &l.Watches }},
	{"publish-rate", func(l *Limits) *int { return &l.PublishRate }},
	{"publish-burst", func(l *Limits) *int { return &l.PublishBurst }},
}

// String lists the limits as watchqd.conf writes them.
func (l Limits) String() string {
	s := ""
	for i, k := range limitKeys {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", k.name, *k.f(&l))
	}
	return s
}

// limitRule is one "limits SUBJECT KEY=VALUE..." line; set marks the keys
// it gives (by index in limitKeys).
type limitRule struct {
	rule
	lim Limits
	set [len(limitKeys)]bool
}

// Limits returns c's limits: for each limit, the largest value any limits
// rule matching c gives, or, when none gives it, the built-in default
// (RootLimits for uid 0, DefaultLimits otherwise).
func (rs *Rules) Limits(c *watchq.Cred) Limits {
	l := defaultLimits
	if c.UID == 0 {
		l = rootLimits
	}
	var seen [len(limitKeys)]bool
	for i := range rs.limits {
		r := &rs.limits[i]
		if !r.matches(c) {
			continue
		}
		for k, key := range limitKeys {
			if !r.set[k] {
				continue
			}
			v := *key.f(&r.lim)
			if p := key.f(&l); !seen[k] || v > *p {
				*p = v
			}
			seen[k] = true
		}
	}
	return l
}

// Limits returns c's limits under the rules in force.
func (p *Policy) Limits(c *watchq.Cred) Limits { return p.rules.Load().Limits(c) }
