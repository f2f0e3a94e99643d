// Package version says which build of watchq is running, for --version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// String is "PROG VERSION (REVISION) GOVERSION": the module version (or
// "devel"), the VCS revision when the build recorded one, and the Go
// release, from the binary's build information.
func String(prog string) string {
	v, rev := "devel", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			v = mv
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				if s.Value == "true" && rev != "" {
					rev += "+dirty"
				}
			}
		}
	}
	if rev != "" {
		return fmt.Sprintf("%s %s (%s) %s", prog, v, rev, runtime.Version())
	}
	return fmt.Sprintf("%s %s %s", prog, v, runtime.Version())
}
