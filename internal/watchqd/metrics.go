package watchqd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/protocol"
)

// metricsAddr parses --metrics: "unix:/path" or a host:port whose host is
// a loopback address (127.0.0.1, ::1, or localhost). It returns the
// network and address for net.Listen.
func metricsAddr(s string) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("%q: want unix:/absolute/path", s)
		}
		return "unix", p, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("%q: want unix:/path or host:port (%v)", s, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", fmt.Errorf("%q: port %q is not a number", s, port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", "", fmt.Errorf("%q: the metrics endpoint serves only a loopback address or a Unix socket", s)
	}
	return "tcp", net.JoinHostPort(host, port), nil
}

// serveMetrics serves srv's metrics over HTTP (GET /metrics) at addr
// until ctx ends. A Unix socket is created mode 0660 (a stale socket at
// the path is replaced) and removed at the end.
func serveMetrics(ctx context.Context, addr string, srv *daemon.Server, log *slog.Logger) (stop func(), err error) {
	network, a, err := metricsAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if fi, err := os.Lstat(a); err == nil && fi.Mode().Type() == os.ModeSocket {
			os.Remove(a)
		}
	}
	l, err := net.Listen(network, a)
	if err != nil {
		return nil, fmt.Errorf("watchqd: metrics endpoint: %w", err)
	}
	if network == "unix" {
		if err := os.Chmod(a, 0o660); err != nil {
			l.Close()
			return nil, fmt.Errorf("watchqd: metrics endpoint: %w", err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(srv), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("metrics endpoint", "addr", addr)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		<-done
		if network == "unix" {
			os.Remove(a)
		}
	}, nil
}

// collector exports the server's own counters (daemon.Server: Stats,
// Usages, QueueStats, Counters) at each scrape; it keeps none of its own.
type collector struct {
	srv *daemon.Server // immutable
}

func newCollector(srv *daemon.Server) *collector { return &collector{srv: srv} }

// Metric descriptions; the per-source and per-class ones are made at
// scrape time from the counters' names (one name per figure: stat
// prints the same names).
var (
	descClients   = prometheus.NewDesc("watchqd_clients", "Connected clients, all users.", nil, nil)
	descQueues    = prometheus.NewDesc("watchqd_queues", "Open queues, all users.", nil, nil)
	descPages     = prometheus.NewDesc("watchqd_pages", "Pages charged for queue rings and pipes, all users.", nil, nil)
	descWatches   = prometheus.NewDesc("watchqd_watches", "Watches, all users.", nil, nil)
	descUsers     = prometheus.NewDesc("watchqd_users", "Uids holding a connection, queue, page or watch.", nil, nil)
	descPublished = prometheus.NewDesc("watchqd_published_total", "Records accepted from publishers.", nil, nil)
	descRefused   = prometheus.NewDesc("watchqd_refused_total", "Requests the policy refused.", nil, nil)
	descEvents    = prometheus.NewDesc("watchqd_events_total", "Daemon events: accept_errors (each backed off), rejected (connections refused at a limit), timed_out (connections closed at a deadline), throttled (publishes refused for rate), close_lost (records that could not reach a closing queue's pipe).", []string{"event"}, nil)

	descUIDClients = prometheus.NewDesc("watchqd_uid_clients", "Connections of the uid.", []string{"uid"}, nil)
	descUIDQueues  = prometheus.NewDesc("watchqd_uid_queues", "Open queues of the uid.", []string{"uid"}, nil)
	descUIDPages   = prometheus.NewDesc("watchqd_uid_pages", "Pages charged to the uid.", []string{"uid"}, nil)
	descUIDWatches = prometheus.NewDesc("watchqd_uid_watches", "Watches of the uid.", []string{"uid"}, nil)
	// Sums over the uid's open queues: gauges, as they fall when a
	// queue closes.
	descUIDQueued   = prometheus.NewDesc("watchqd_uid_queued", "Records waiting in the uid's open queues (depth).", []string{"uid"}, nil)
	descUIDPosted   = prometheus.NewDesc("watchqd_uid_posted", "Records posted to the uid's open queues.", []string{"uid"}, nil)
	descUIDLost     = prometheus.NewDesc("watchqd_uid_lost", "Records the uid's open queues lost.", []string{"uid"}, nil)
	descUIDFiltered = prometheus.NewDesc("watchqd_uid_filtered", "Records the uid's open queues' filters kept out.", []string{"uid"}, nil)
	descUIDDenied   = prometheus.NewDesc("watchqd_uid_denied", "Records the policy kept out of the uid's open queues.", []string{"uid"}, nil)
	descUIDWritten  = prometheus.NewDesc("watchqd_uid_written", "Records written to the pipes of the uid's open queues.", []string{"uid"}, nil)
)

// Describe implements prometheus.Collector. The per-source and
// per-class metrics are described at scrape time, so the collector is
// unchecked for them; the fixed ones are listed here.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClients, descQueues, descPages, descWatches, descUsers, descPublished, descRefused, descEvents,
		descUIDClients, descUIDQueues, descUIDPages, descUIDWatches, descUIDQueued, descUIDPosted, descUIDLost, descUIDFiltered, descUIDDenied, descUIDWritten} {
		ch <- d
	}
	for _, d := range groupDescs(c.srv.Counters()) {
		ch <- d
	}
}

// metricName is the metric a counter of group g is exported as:
// watchqd_<source>_<counter>_total for a source, and
// watchqd_class_<counter>_total{class=...} for a record class.
func metricName(g protocol.CounterGroup, counter string) string {
	n := strings.ReplaceAll(counter, "-", "_")
	if g.Kind == protocol.GroupClass {
		return "watchqd_class_" + n + "_total"
	}
	return "watchqd_" + strings.ReplaceAll(g.Name, "-", "_") + "_" + n + "_total"
}

// groupDescs describes the counters of gs, one Desc per metric name.
func groupDescs(gs []protocol.CounterGroup) map[string]*prometheus.Desc {
	out := map[string]*prometheus.Desc{}
	for _, g := range gs {
		for _, k := range g.Counters {
			name := metricName(g, k.Name)
			if _, ok := out[name]; ok {
				continue
			}
			if g.Kind == protocol.GroupClass {
				out[name] = prometheus.NewDesc(name, fmt.Sprintf("Copies of the class's records offered to watches that were %s, over all queues (classes: watchqd.conf's device classes; publisher: every publisher type).", k.Name), []string{"class"}, nil)
			} else {
				out[name] = prometheus.NewDesc(name, fmt.Sprintf("The %s source's %s counter (watchq stat's name: %s).", g.Name, strings.ReplaceAll(k.Name, "_", " "), k.Name), nil, nil)
			}
		}
	}
	return out
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	st := c.srv.Stats()
	gauge(descClients, float64(st.Clients))
	gauge(descQueues, float64(st.Queues))
	gauge(descPages, float64(st.Pages))
	gauge(descWatches, float64(st.Watches))
	gauge(descUsers, float64(st.Users))
	counter(descPublished, st.Published)
	counter(descRefused, st.Refused)
	counter(descEvents, st.AcceptErrors, "accept_errors")
	counter(descEvents, st.Rejected, "rejected")
	counter(descEvents, st.TimedOut, "timed_out")
	counter(descEvents, st.Throttled, "throttled")
	counter(descEvents, st.CloseLost, "close_lost")

	for _, u := range c.srv.Usages() {
		uid := strconv.FormatUint(uint64(u.UID), 10)
		gauge(descUIDClients, float64(u.Connections), uid)
		gauge(descUIDQueues, float64(u.Queues), uid)
		gauge(descUIDPages, float64(u.Pages), uid)
		gauge(descUIDWatches, float64(u.Watches), uid)
	}
	type sums struct{ queued, posted, lost, filtered, denied, written uint64 }
	byUID := map[uint32]*sums{}
	for _, q := range c.srv.QueueStats() {
		s := byUID[q.UID]
		if s == nil {
			s = &sums{}
			byUID[q.UID] = s
		}
		s.queued += uint64(q.Queued)
		s.posted += q.Posted
		s.lost += q.Lost
		s.filtered += q.Filtered
		s.denied += q.Denied
		s.written += q.Written
	}
	for u, s := range byUID {
		uid := strconv.FormatUint(uint64(u), 10)
		gauge(descUIDQueued, float64(s.queued), uid)
		gauge(descUIDPosted, float64(s.posted), uid)
		gauge(descUIDLost, float64(s.lost), uid)
		gauge(descUIDFiltered, float64(s.filtered), uid)
		gauge(descUIDDenied, float64(s.denied), uid)
		gauge(descUIDWritten, float64(s.written), uid)
	}

	gs := c.srv.Counters()
	descs := groupDescs(gs)
	for _, g := range gs {
		for _, k := range g.Counters {
			d := descs[metricName(g, k.Name)]
			if g.Kind == protocol.GroupClass {
				counter(d, k.Value, g.Name)
			} else {
				counter(d, k.Value)
			}
		}
	}
}
