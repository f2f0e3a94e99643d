package watchq

import (
	"fmt"
	"strings"
	"sync"

	"github.com/watchq/watchq/record"
)

// Access is a set of label-policy permissions, as Smack spells them.
type Access uint8

// Access bits. Watching needs Read on the object (smack_watch_key:
// MAY_READ); delivering a record needs Write from the generator's label to
// the watcher's label (smack_post_notification: MAY_WRITE).
const (
	AccessRead  Access = 1 << iota // "r"
	AccessWrite                    // "w"
)

// ParseAccess parses an access string such as "rw", "r", "w" or "-".
func ParseAccess(s string) (Access, error) {
	var a Access
	for _, c := range s {
		switch c {
		case 'r':
			a |= AccessRead
		case 'w':
			a |= AccessWrite
		case '-':
		default:
			return 0, errInval("access %q: unknown permission %q", s, c)
		}
	}
	return a, nil
}

// Smack's special labels (security/smack/smack_access.c).
const (
	LabelFloor = "_" // readable by every subject
	LabelHat   = "^" // a subject that may read every object
	LabelStar  = "*" // an object every subject may read and write
	LabelWeb   = "@" // an object and subject with all access to everything
)

// LabelPolicy is a Smack-like mandatory policy over Cred.Label and
// Object.Label, mirroring security/smack/smack_lsm.c:smack_watch_key and
// smack_post_notification:
//
//   - a watch needs Read from the watcher's label to the object's label;
//   - a record reaches a watch only with Write from the generator's label to
//     the watcher's label; meta records are always allowed (the engine never
//     asks), and so is a nil generator.
//
// Access is decided as smk_access does: a star object or a web label on
// either side allows everything; a hat subject may read anything; a floor
// object may be read by anyone; equal labels allow everything; otherwise the
// explicit rule (subject, object) applies, and no rule denies. An empty
// label is treated as the floor label "_". Root has no override (Smack's
// CAP_MAC_OVERRIDE is not modelled).
type LabelPolicy struct {
	mu    sync.RWMutex         // guards rules
	rules map[[2]string]Access // (subject, object) → access
}

// NewLabelPolicy returns a label policy with no explicit rules.
func NewLabelPolicy() *LabelPolicy { return &LabelPolicy{rules: make(map[[2]string]Access)} }

// SetRule sets the access subject has to object, replacing any earlier
// rule, as a line "subject object access" written to Smack's load2 does.
func (p *LabelPolicy) SetRule(subject, object string, a Access) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules[[2]string{subject, object}] = a
}

// ParseRules adds rules from text, one "subject object access" per line;
// '#' starts a comment.
func (p *LabelPolicy) ParseRules(text string) error {
	for i, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return errInval("rule line %d: want \"subject object access\", got %q", i+1, line)
		}
		a, err := ParseAccess(f[2])
		if err != nil {
			return fmt.Errorf("rule line %d: %w", i+1, err)
		}
		p.SetRule(f[0], f[1], a)
	}
	return nil
}

func floor(l string) string {
	if l == "" {
		return LabelFloor
	}
	return l
}

// Access returns the access subject has to object.
// Corresponds to security/smack/smack_access.c:smk_access.
func (p *LabelPolicy) Access(subject, object string) Access {
	subject, object = floor(subject), floor(object)
	const all = AccessRead | AccessWrite
	if object == LabelStar || object == LabelWeb || subject == LabelWeb || subject == object {
		return all
	}
	var a Access
	if subject == LabelHat || object == LabelFloor {
		a |= AccessRead
	}
	p.mu.RLock()
	a |= p.rules[[2]string{subject, object}]
	p.mu.RUnlock()
	return a
}

// WatchAllowed implements Policy: Read from the watcher to the object.
func (p *LabelPolicy) WatchAllowed(w *Cred, obj Object) error {
	if p.Access(w.Label, obj.Label)&AccessRead == 0 {
		return &PermissionError{Op: "watch", Reason: fmt.Sprintf("label %q may not read %v label %q", floor(w.Label), obj.Kind, floor(obj.Label))}
	}
	return nil
}

// PostAllowed implements Policy: Write from the generator to the watcher.
func (p *LabelPolicy) PostAllowed(w, gen *Cred, _ record.Record) error {
	if gen == nil || p.Access(gen.Label, w.Label)&AccessWrite != 0 {
		return nil
	}
	return errPostDenied
}

// errPostDenied is returned on the posting path, which must not allocate.
var errPostDenied = &PermissionError{Op: "post", Reason: "generator label may not write to watcher label"}
