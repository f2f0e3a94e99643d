//go:build linux

package watchqd

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
)

// scrape GETs /metrics from the endpoint at the Unix socket path.
func scrape(t *testing.T, path string) []byte {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	resp, err := hc.Get("http://watchqd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v:\n%s", resp.Status, err, b)
	}
	return b
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s sample with labels %v", name, want)
	return 0
}

// TestMetrics runs watchqd with --metrics on a Unix socket, gives it a
// client with a queue watching a publisher type and two records
// published, scrapes the endpoint, parses it with the Prometheus text
// parser and checks the figures (clients, queues, depth, posted per uid,
// posted per class, the device source's counters when it runs), then
// runs promtool check metrics on the scrape (skipped without promtool).
// When the daemon stops, the endpoint's socket goes.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "watchqd.conf")
	const typ = record.Type(0x800123)
	if err := os.WriteFile(conf, []byte("* watch=0x800123 publish=0x800123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msock := filepath.Join(dir, "metrics.sock")
	devices := "off"
	if os.Geteuid() == 0 {
		devices = "auto"
	}
	p := start(t, filepath.Join(dir, "watchqd.sock"), "", "--config", conf, "--metrics", "unix:"+msock, "--devices", devices)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.WatchPublisher(ctx, typ, 1); err != nil {
		t.Fatal(err)
	}
	// A second queue whose filter keeps only USB records: the
	// publishes are filtered there.
	q2, err := c.CreateQueue(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := record.NewFilter(record.FilterEntry{Type: record.TypeUSB, Subtypes: record.AllSubtypes})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.SetFilter(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := q2.WatchPublisher(ctx, typ, 2); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 8)
	record.Header{Type: typ, Info: record.MakeInfo(8, 0, 0)}.Put(rec)
	for range 2 {
		if err := c.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	b := scrape(t, msock)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("text parser: %v\n%s", err, b)
	}
	uid := map[string]string{"uid": strconv.Itoa(os.Geteuid())}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"watchqd_clients", nil, 1},
		{"watchqd_queues", nil, 2},
		{"watchqd_published_total", nil, 2},
		{"watchqd_uid_clients", uid, 1},
		{"watchqd_uid_queues", uid, 2},
		{"watchqd_uid_filtered", uid, 2},
		{"watchqd_uid_posted", uid, 2},
		{"watchqd_class_posted_total", map[string]string{"class": "publisher"}, 2},
		{"watchqd_class_lost_total", map[string]string{"class": "publisher"}, 0},
		{"watchqd_class_filtered_total", map[string]string{"class": "publisher"}, 2},
		{"watchqd_class_denied_total", map[string]string{"class": "usb"}, 0},
	} {
		if got := value(t, fams, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// Depth: records posted minus those the pump moved to the pipe. A
	// record the pump holds between its engine read and its write(2) is
	// in neither for that moment, so scrape again until the two add up
	// (they must within the deadline: nothing else moves them).
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := value(t, fams, "watchqd_uid_queued", uid) + value(t, fams, "watchqd_uid_written", uid)
		if got == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("queued + written = %v, want 2", got)
			break
		}
		time.Sleep(10 * time.Millisecond)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		if fams, err = parser.TextToMetricFamilies(bytes.NewReader(scrape(t, msock))); err != nil {
			t.Fatal(err)
		}
	}
	if devices == "auto" && bytes.Contains([]byte(p.Log()), []byte(`msg="device source"`)) {
		value(t, fams, "watchqd_device_uevents_received_total", nil)
		value(t, fams, "watchqd_device_ring_drops_total", nil)
	}

	if promtool, err := exec.LookPath("promtool"); err != nil {
		testenv.Skip(t, "promtool not installed (Debian: apt-get install prometheus; scripts/setup does)")
	} else {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	q.Close()
	q2.Close()
	c.Close()
	p.stop(t)
	if _, err := os.Lstat(msock); !os.IsNotExist(err) {
		t.Errorf("metrics socket left behind: %v", err)
	}
	// The start and stop lines.
	for _, w := range []string{`msg="watchqd ready" version="watchqd `, ` metrics=unix:` + msock, `msg="watchqd stopping" reason="signal terminated"`, ` uptime=`} {
		if !strings.Contains(p.Log(), w) {
			t.Errorf("log lacks %q:\n%s", w, p.Log())
		}
	}
}
