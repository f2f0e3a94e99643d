//go:build vmtest

package keys

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/vmtest/guest"
)

// TestVMFidelity plays the fidelity scenario against the guest kernel's own
// facility and, in the same guest, against the traced backend, and
// compares the streams record by record. The kernel's stream is handed to
// the host as the artifact fidelity.kernel (copy it to
// source/keys/testdata/ to renew the golden file the host's
// TestTracedFidelity compares with) and checked against that file here, so
// a stale golden file fails.
func TestVMFidelity(t *testing.T) {
	streams := map[Backend][]string{}
	for _, b := range []Backend{Kernel, Traced} {
		t.Run(b.String(), func(t *testing.T) {
			src, err := Open(context.Background(), Config{Engine: watchq.NewEngine(watchq.Config{}), Backend: b, Interval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			streams[b] = fidelity(t, src) // this subtest's thread ends with it
		})
	}
	k := streams[Kernel]
	if len(k) == 0 {
		t.Fatal("no kernel stream")
	}
	data := []byte(strings.Join(k, "\n") + "\n")
	if err := guest.SaveArtifact(context.Background(), "fidelity.kernel", data); err != nil {
		t.Logf("SaveArtifact: %v", err)
	}
	compareStreams(t, "traced (guest)", streams[Traced], "kernel (guest)", k)
	golden, err := os.ReadFile(fidelityGolden)
	if err != nil {
		t.Fatal(err)
	}
	compareStreams(t, "kernel (guest)", k, "golden "+fidelityGolden, strings.Split(strings.TrimSpace(string(golden)), "\n"))
}
