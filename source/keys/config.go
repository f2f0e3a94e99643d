package keys

import (
	"time"

	"github.com/watchq/watchq"
)

// BackendEnv overrides the Auto backend choice: "kernel", "traced" or "poll".
const BackendEnv = "WATCHQ_KEYS_BACKEND"

// DefaultInterval is the poll backend's interval when Config.Interval is 0.
const DefaultInterval = time.Second

// Config configures a Source.
type Config struct {
	// Engine makes the watch lists and holds the policy. Required.
	Engine *watchq.Engine
	// Backend selects the backend; Auto (the zero value) picks Kernel when
	// kernel.Probe succeeds and, when it says the kernel lacks the facility
	// (kernel.ErrNotSupported), Traced where its programs load, else Poll,
	// unless $WATCHQ_KEYS_BACKEND says otherwise. A probe or a tracer load
	// that itself failed for a passing reason (EMFILE, ENOMEM) fails Open
	// rather than settle on a lesser backend for the source's life.
	Backend Backend
	// Interval is the poll backend's interval; 0 means DefaultInterval.
	Interval time.Duration
	// Generator is the credential records are posted with; nil means
	// watchq.SystemCred.
	Generator *watchq.Cred
	// PipeNotes sizes the kernel backend's notification pipe (1..512,
	// rounded up to 32-note pages); 0 means 512.
	PipeNotes int
}
