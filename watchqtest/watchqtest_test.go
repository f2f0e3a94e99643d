package watchqtest_test

import (
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

func TestHelpers(t *testing.T) {
	eng := watchq.NewEngine(watchq.Config{})
	wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindDevices})
	q := watchqtest.Queue(t, 32)
	if err := wl.Add(q, 0, 9, watchq.CurrentCred()); err != nil {
		t.Fatal(err)
	}
	watchqtest.Quiet(t, q, 10*time.Millisecond)
	wl.Post(watchqtest.Rec(record.USBNotification{Name: "2-1"}), watchq.SystemCred, 0)
	wl.Post(watchqtest.Rec(record.USBNotification{Subtype: record.USBDeviceRemove, Name: "2-1"}), watchq.SystemCred, 0)
	got := watchqtest.Collect(t, q, 1, time.Second)
	if u, err := got[0].USB(); err != nil || u.Name != "2-1" || u.Tag != 9 {
		t.Errorf("Collect: %+v %v", u, err)
	}
	if rest := watchqtest.Drain(t, q); len(rest) != 1 || rest[0].Subtype() != record.USBDeviceRemove {
		t.Errorf("Drain: %v", rest)
	}
}
