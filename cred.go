package watchq

import (
	"bytes"
	"fmt"
	"os"
	"slices"
)

// Cred is the credentials of a watcher (taken when the watch is added, like
// the kernel's watch->cred = get_cred(current_cred())) or of the generator
// of a record (the kernel's event triggerer, init_cred for system events).
// A Cred must not be modified once it is passed to the engine.
type Cred struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
	PID      int32    // 0 when not a process (SystemCred)
	Label    string   // LSM label (SO_PEERSEC, /proc/self/attr/current); "" when none
}

// SystemCred stands for the kernel's init_cred: the generator of device and
// other system notifications ("may be init_cred for a system notification,
// eg. a hardware error").
var SystemCred = &Cred{UID: 0, GID: 0, Label: ""}

// CurrentCred returns this process's effective credentials, supplementary
// groups and LSM label.
func CurrentCred() *Cred {
	c := &Cred{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: int32(os.Getpid())}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	if b, err := os.ReadFile("/proc/self/attr/current"); err == nil {
		c.Label = string(bytes.TrimRight(b, "\x00\n"))
		if c.Label == "unconfined" {
			c.Label = ""
		}
	}
	return c
}

// InGroup reports whether gid is the credential's group or one of its
// supplementary groups.
func (c *Cred) InGroup(gid uint32) bool { return c.GID == gid || slices.Contains(c.Groups, gid) }

// String formats the credentials for logs.
func (c *Cred) String() string {
	if c == nil {
		return "cred<nil>"
	}
	s := fmt.Sprintf("uid=%d gid=%d pid=%d", c.UID, c.GID, c.PID)
	if c.Label != "" {
		s += " label=" + c.Label
	}
	return s
}
