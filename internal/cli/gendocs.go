package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Completion script file names GenCompletion writes, by shell.
var completionFiles = map[string]string{
	"bash": "watchq.bash",
	"zsh":  "_watchq",
	"fish": "watchq.fish",
}

func newGenDocsCommand() *cobra.Command {
	var manDir, complDir string
	cmd := &cobra.Command{
		Use:    "gen-docs",
		Short:  "Generate the man pages and shell completion scripts",
		Hidden: true,
		Args:   positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if manDir != "" {
				if err := GenMan(manDir); err != nil {
					return err
				}
			}
			if complDir != "" {
				if err := GenCompletion(complDir); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "write watchq.1 and its subcommands' pages to `DIR`")
	cmd.Flags().StringVar(&complDir, "completion", "", "write bash, zsh and fish completion scripts to `DIR`")
	return cmd
}

// docRoot returns the command tree as it is documented: with cobra's
// completion command, which Execute would add.
func docRoot() *cobra.Command {
	root := NewRoot()
	root.DisableAutoGenTag = true
	root.InitDefaultCompletionCmd()
	root.InitDefaultVersionFlag()
	return root
}

// GenMan writes watchq.1 and one page per subcommand (watchq-watch.1,
// watchq-watch-keys.1, …) to dir. The date in the .TH line is the current
// month unless $SOURCE_DATE_EPOCH is set.
func GenMan(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	hdr := &doc.GenManHeader{Section: "1", Source: "watchq", Manual: "watchq manual"}
	var gen func(cmd *cobra.Command) error
	gen = func(cmd *cobra.Command) error {
		if !cmd.IsAvailableCommand() && cmd != cmd.Root() || cmd.IsAdditionalHelpTopicCommand() {
			return nil
		}
		for _, c := range cmd.Commands() {
			if err := gen(c); err != nil {
				return err
			}
		}
		var b bytes.Buffer
		h := *hdr
		if err := doc.GenMan(cmd, &h, &b); err != nil {
			return err
		}
		name := strings.ReplaceAll(cmd.CommandPath(), " ", "-") + ".1"
		es := exitStatus
		if v, ok := cmd.Annotations[manExitStatus]; ok {
			es = v
		}
		return os.WriteFile(filepath.Join(dir, name), withExitStatus(b.Bytes(), es), 0o644)
	}
	if err := gen(docRoot()); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	return nil
}

// exitStatus is the EXIT STATUS section of every watchq page (cobra's
// generator has no place for it).
const exitStatus = `.SH EXIT STATUS
.TP
.B 0
Success; a watch ended by SIGINT or SIGTERM, by --count, --once or
--timeout without --count; watch keys when a removal ended its last
watch (as keyctl watch on gc).
.TP
.B 1
The command failed: a source or the daemon refused, the daemon went away
(without --wait), or the input was malformed. The message on standard
error says why and what fixes it.
.TP
.B 2
Bad flags or arguments.
`

// manExitStatus is the annotation a command sets to replace exitStatus
// in its page.
const manExitStatus = "man-exit-status"

// withExitStatus inserts the EXIT STATUS section es before SEE ALSO (or at
// the end).
func withExitStatus(page []byte, es string) []byte {
	if i := bytes.Index(page, []byte(".SH SEE ALSO")); i >= 0 {
		return append(append(append([]byte(nil), page[:i]...), es...), page[i:]...)
	}
	return append(page, es...)
}

// GenCompletion writes the bash, zsh and fish completion scripts to dir.
func GenCompletion(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("completion: %w", err)
	}
	root := docRoot()
	for shell, name := range completionFiles {
		var b bytes.Buffer
		var err error
		switch shell {
		case "bash":
			err = root.GenBashCompletionV2(&b, true)
		case "zsh":
			err = root.GenZshCompletion(&b)
		case "fish":
			err = root.GenFishCompletion(&b, true)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644)
		}
		if err != nil {
			return fmt.Errorf("completion %s: %w", shell, err)
		}
	}
	return nil
}
