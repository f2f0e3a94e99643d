package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/source/keys"
)

func newStatCommand() *cobra.Command {
	var (
		asJSON  bool
		socket  string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "stat",
		Short: "Show the watchqd daemon's queues, sources and losses",
		Long: `Stat asks the watchqd daemon for its counters and prints them: connected
clients, open queues, whether the device source runs, records published
and requests refused; each source's counters (the device source's uevents
received, spoofed datagrams dropped, socket overruns, ring-buffer drops...);
what became of each record class's records (usb, block-errors,
block-lifecycle, publisher: copies posted, lost, filtered and denied, over
all queues); and for each queue
the caller may see (those of every process of the caller's user, or every
client's for root) its owner, capacity, and records queued, watches, and
records posted, lost, filtered, denied and written to the client's pipe.
Each figure has one name, the same in the text and in --json
(docs/daemon.md lists them).

If the daemon does not answer at --socket, stat says so and exits with
status 1.`,
		Example: `  watchq stat
  watchq stat --json --socket /run/watchq/watchqd.sock`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := client.Dial(ctx, socket)
			if err != nil {
				return dialError(socket, err)
			}
			defer c.Close()
			s, err := c.Stats(ctx)
			if err != nil {
				return fmt.Errorf("stat: %w", err)
			}
			if asJSON {
				kb, err := c.KeyBackend(ctx)
				if err != nil {
					return fmt.Errorf("stat: %w", err)
				}
				return writeStatJSON(cmd.OutOrStdout(), socket, s, kb)
			}
			if err := writeStatText(cmd.OutOrStdout(), socket, s); err != nil {
				return err
			}
			return writeStatKeys(ctx, cmd.OutOrStdout(), c)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the statistics as one JSON object")
	cmd.Flags().StringVar(&socket, "socket", defaultSocket(), "watchqd daemon socket `path`")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up on the daemon after this long")
	return cmd
}

// statJSON is stat's JSON form.
type statJSON struct {
	Socket    string `json:"socket"`
	Clients   int    `json:"clients"`
	Queues    int    `json:"queues"`
	Devices   bool   `json:"devices"`
	Published uint64 `json:"published"`
	Refused   uint64 `json:"refused"`
	// KeyBackend is the daemon's key source backend, as --backend names
	// it ("traced"), or "none" when watch-key is ENODEV.
	KeyBackend string                       `json:"key_backend"`
	Sources    map[string]map[string]uint64 `json:"sources"`
	Classes    map[string]map[string]uint64 `json:"classes"`
	Entries    []statQueueJSON              `json:"queue_list"`
}

// statQueueJSON is one queue in stat's JSON form.
type statQueueJSON struct {
	Queue    uint32 `json:"queue"`
	PID      int32  `json:"pid"`
	UID      uint32 `json:"uid"`
	Capacity uint32 `json:"capacity"`
	Queued   uint32 `json:"queued"`
	Watches  uint32 `json:"watches"`
	Posted   uint64 `json:"posted"`
	Lost     uint64 `json:"lost"`
	Filtered uint64 `json:"filtered"`
	Denied   uint64 `json:"denied"`
	Written  uint64 `json:"written"`
}

// statGroups splits the daemon's counter groups into sources and classes,
// each in the daemon's order.
func statGroups(s *client.Stats) (sources, classes []client.CounterGroup) {
	for _, g := range s.Counters {
		switch g.Kind {
		case protocol.GroupSource:
			sources = append(sources, g)
		case protocol.GroupClass:
			classes = append(classes, g)
		}
	}
	return sources, classes
}

func groupMap(gs []client.CounterGroup) map[string]map[string]uint64 {
	m := map[string]map[string]uint64{}
	for _, g := range gs {
		m[g.Name] = map[string]uint64{}
		for _, c := range g.Counters {
			m[g.Name][c.Name] = c.Value
		}
	}
	return m
}

func writeStatJSON(w io.Writer, socket string, s *client.Stats, keyBackend uint64) error {
	sources, classes := statGroups(s)
	j := statJSON{Socket: socket, Clients: s.Clients, Queues: s.Queues, Devices: s.Devices,
		Published: s.Published, Refused: s.Refused, KeyBackend: "none",
		Sources: groupMap(sources), Classes: groupMap(classes), Entries: []statQueueJSON{}}
	if keyBackend != protocol.KeyBackendNone {
		j.KeyBackend = keys.Backend(keyBackend).String()
	}
	for _, q := range s.Entries {
		j.Entries = append(j.Entries, statQueueJSON(q))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}

func writeStatText(w io.Writer, socket string, s *client.Stats) error {
	dev := "not running"
	if s.Devices {
		dev = "running"
	}
	fmt.Fprintf(w, "watchqd at %s\n", socket)
	fmt.Fprintf(w, "clients %d, queues %d, device source %s, published %d, refused %d\n",
		s.Clients, s.Queues, dev, s.Published, s.Refused)
	sources, classes := statGroups(s)
	for _, g := range sources {
		parts := make([]string, len(g.Counters))
		for i, c := range g.Counters {
			parts[i] = fmt.Sprintf("%s %d", c.Name, c.Value)
		}
		fmt.Fprintf(w, "%s source: %s\n", g.Name, strings.Join(parts, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if len(classes) > 0 {
		// The daemon names the figures; the columns are its names, in
		// its order.
		var cols []string
		for _, c := range classes[0].Counters {
			cols = append(cols, c.Name)
		}
		fmt.Fprintf(tw, "CLASS\t%s\n", strings.ToUpper(strings.Join(cols, "\t")))
		for _, g := range classes {
			fmt.Fprint(tw, g.Name)
			for _, c := range cols {
				v, _ := g.Value(c)
				fmt.Fprintf(tw, "\t%d", v)
			}
			fmt.Fprintln(tw)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "QUEUE\tPID\tUID\tCAPACITY\tQUEUED\tWATCHES\tPOSTED\tLOST\tFILTERED\tDENIED\tWRITTEN")
	for _, q := range s.Entries {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n",
			q.Queue, q.PID, q.UID, q.Capacity, q.Queued, q.Watches, q.Posted, q.Lost, q.Filtered, q.Denied, q.Written)
	}
	return tw.Flush()
}
