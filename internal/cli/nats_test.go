package cli

import (
	"testing"

	"github.com/spf13/cobra"
)

// TestNATSFlags: the security flags reach the fleet.NATS settings that go
// to nats.go as they are (fleet's TestCreds and TestSecurity prove those
// settings against real servers), and forward and watch have them.
func TestNATSFlags(t *testing.T) {
	cmd := &cobra.Command{Use: "test"}
	var nf natsFlags
	nf.add(cmd)
	if err := cmd.Flags().Parse([]string{"--creds", "/etc/watchq/forward.creds", "--nkey", "/etc/watchq/user.nk",
		"--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-first", "--user", "u"}); err != nil {
		t.Fatal(err)
	}
	c, err := nf.config("nats://n:4222", "test")
	if err != nil {
		t.Fatal(err)
	}
	if c.Creds != "/etc/watchq/forward.creds" || c.NKeySeed != "/etc/watchq/user.nk" || c.TLSCA != "ca.pem" ||
		c.TLSCert != "c.pem" || c.TLSKey != "k.pem" || !c.TLSFirst || c.User != "u" || c.URL != "nats://n:4222" || c.Name != "test" {
		t.Errorf("config %+v", c)
	}
	for _, cmd := range []*cobra.Command{newForwardCommand(), newWatchCommand()} {
		for _, flag := range []string{"creds", "nkey", "tls-ca", "tls-cert", "tls-key", "tls-first", "user", "password-file"} {
			if cmd.Flags().Lookup(flag) == nil && cmd.PersistentFlags().Lookup(flag) == nil {
				t.Errorf("%s has no --%s", cmd.Name(), flag)
			}
		}
	}
}
