package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

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
	if err := doc.GenManTree(docRoot(), hdr, dir); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	return nil
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
