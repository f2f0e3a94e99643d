package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/watchq/watchq/printer"
)

// FormatHelp documents --format, for help and man pages.
const FormatHelp = `Output formats (--format):

    line    one line per record: time, source, object, event, details
            (the default when standard output is a terminal)
    sample  what the kernel's samples/watch_queue/watch_test.c prints:
            "read() = N", then NOTIFY and description lines (the default
            otherwise, so pipes and scripts see the historical output)
    keyctl  what keyutils' "keyctl watch" prints ("ID link AUX", "ID gc")
    json    one JSON object per record, schema version 1 (docs/cli.md);
            --raw adds the record's bytes in hex`

// addFormatFlags adds --format, --json (--format json) and --raw.
func addFormatFlags(cmd *cobra.Command, format *string, asJSON, raw *bool) {
	f := cmd.Flags()
	f.StringVar(format, "format", "", "output `format`: "+strings.Join(printer.Formats(), ", ")+" (default line on a terminal, else sample)")
	f.BoolVar(asJSON, "json", false, "same as --format json")
	f.BoolVar(raw, "raw", false, "with --format json: add each record's bytes in hex")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(printer.Formats(), cobra.ShellCompDirectiveNoFileComp))
}

// printerOptions resolves the format flags for output to w.
func printerOptions(w io.Writer, format string, asJSON, raw bool) (printer.Options, error) {
	var o printer.Options
	switch {
	case asJSON && format != "" && format != "json":
		return o, usageError{fmt.Errorf("--json and --format %s disagree", format)}
	case asJSON:
		format = "json"
	case format == "":
		format = "sample"
		if isTerminal(w) {
			format = "line"
		}
	}
	f, err := printer.ParseFormat(format)
	if err != nil {
		return o, usageError{fmt.Errorf("--format: %w", err)}
	}
	if raw && f != printer.FormatJSON {
		return o, usageError{fmt.Errorf("--raw needs --format json")}
	}
	o.Format, o.Raw = f, raw
	return o, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
