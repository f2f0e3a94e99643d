package watchq

import (
	"sync"
	"syscall"
)

// Config configures an Engine.
type Config struct {
	// Policy rules on watches and posts; nil means DefaultPolicy.
	Policy Policy
	// MaxWatchesPerUser bounds the watches one uid may hold across all the
	// engine's lists, as the kernel bounds them by the adder's
	// RLIMIT_NOFILE (29e44f4535fa); 0 means this process's RLIMIT_NOFILE
	// soft limit.
	MaxWatchesPerUser int
	// Counter, if not nil, is told the outcome of every copy Post
	// offers to a watch (postcount.go).
	Counter PostCounter
}

// Engine holds what watch lists share: the policy and the per-user watch
// accounting (the kernel's user_struct nr_watches).
type Engine struct {
	policy   Policy // immutable
	maxWatch int    // immutable
	// postAlwaysAllowed is set when the policy's PostAllowed is known to
	// allow everything, so Post need not call it. Immutable.
	postAlwaysAllowed bool
	counter           PostCounter // Config.Counter; immutable

	mu      sync.Mutex     // guards perUser; a leaf, taken under WatchList.mu
	perUser map[uint32]int // watches held per uid
}

// NewEngine returns an engine configured by cfg.
func NewEngine(cfg Config) *Engine {
	e := &Engine{policy: cfg.Policy, maxWatch: cfg.MaxWatchesPerUser, counter: cfg.Counter, perUser: make(map[uint32]int)}
	if e.policy == nil {
		e.policy = DefaultPolicy{}
	}
	switch e.policy.(type) {
	case DefaultPolicy, AllowAll:
		e.postAlwaysAllowed = true
	}
	if e.maxWatch <= 0 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 && rl.Cur < 1<<31 {
			e.maxWatch = int(rl.Cur)
		} else {
			e.maxWatch = 1024
		}
	}
	return e
}

// NewWatchList returns an empty watch list for obj.
func (e *Engine) NewWatchList(obj Object) *WatchList {
	return newWatchList(e, obj)
}

// Watches returns how many watches uid holds.
func (e *Engine) Watches(uid uint32) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.perUser[uid]
}

// charge counts one more watch for uid, or fails with ErrTooManyWatches.
func (e *Engine) charge(uid uint32) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.perUser[uid] >= e.maxWatch {
		return ErrTooManyWatches
	}
	e.perUser[uid]++
	return nil
}

// uncharge releases one of uid's watches.
func (e *Engine) uncharge(uid uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.perUser[uid]--; e.perUser[uid] <= 0 {
		delete(e.perUser, uid)
	}
}
