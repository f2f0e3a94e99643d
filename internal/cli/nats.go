package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/fleet"
)

// natsFlags are the connection and security flags of the fleet commands,
// passed through to nats.go as they are.
type natsFlags struct {
	fleet.NATS
	passwordFile string
}

func (n *natsFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&n.Creds, "creds", "", "NATS credentials `file` (user JWT and NKey seed)")
	f.StringVar(&n.NKeySeed, "nkey", "", "`file` holding an NKey seed for NKey authentication")
	f.StringVar(&n.User, "user", "", "NATS user `name` (with --password-file)")
	f.StringVar(&n.passwordFile, "password-file", "", "`file` holding the NATS user's password")
	f.StringVar(&n.TLSCA, "tls-ca", "", "PEM `file` of the CAs that sign the servers' certificates (requires TLS)")
	f.StringVar(&n.TLSCert, "tls-cert", "", "client certificate PEM `file` for mutual TLS (with --tls-key)")
	f.StringVar(&n.TLSKey, "tls-key", "", "client key PEM `file` for mutual TLS")
	f.BoolVar(&n.TLSFirst, "tls-first", false, "do the TLS handshake before the server's greeting (servers with handshake_first)")
}

// config returns the connection settings for url.
func (n *natsFlags) config(url, name string) (fleet.NATS, error) {
	c := n.NATS
	c.URL, c.Name = url, name
	if n.passwordFile != "" {
		b, err := os.ReadFile(n.passwordFile)
		if err != nil {
			return c, err
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
	}
	return c, nil
}

// checkURL refuses URLs that are not NATS server URLs.
func checkURL(flag, s string) error {
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimSpace(u)
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return usageError{fmt.Errorf("--%s %q: want nats://HOST:PORT or tls://HOST:PORT (several separated by commas)", flag, u)}
		}
	}
	return nil
}

// parseBytes reads a size: a number of bytes with an optional K, M or G
// (powers of 1024).
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	t = strings.TrimSuffix(t, "I")
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M or G", s)
	}
	return n * mult, nil
}
