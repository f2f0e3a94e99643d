package fleet_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// operator is a decentralised (operator mode) NATS trust chain made for a
// test: an operator, a system account, and accounts with JetStream whose
// users get credentials files.
type operator struct {
	tb       testing.TB
	kp       nkeys.KeyPair
	claims   *jwt.OperatorClaims
	sys      string // the system account's public key
	resolver *server.MemAccResolver
}

func newOperator(tb testing.TB) *operator {
	tb.Helper()
	kp, err := nkeys.CreateOperator()
	if err != nil {
		tb.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	o := &operator{tb: tb, kp: kp, resolver: &server.MemAccResolver{}}
	sysKP, _ := o.account("SYS", false)
	o.sys, _ = sysKP.PublicKey()
	oc := jwt.NewOperatorClaims(pub)
	oc.Name = "watchq-test"
	oc.SystemAccount = o.sys
	tok, err := oc.Encode(kp)
	if err != nil {
		tb.Fatal(err)
	}
	if o.claims, err = jwt.DecodeOperatorClaims(tok); err != nil {
		tb.Fatal(err)
	}
	return o
}

// account creates an account signed by the operator and known to the
// server's resolver; with jetStream it may use JetStream without limits.
func (o *operator) account(name string, jetStream bool) (nkeys.KeyPair, string) {
	o.tb.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		o.tb.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	if jetStream {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	}
	tok, err := ac.Encode(o.kp)
	if err != nil {
		o.tb.Fatal(err)
	}
	if err := o.resolver.Store(pub, tok); err != nil {
		o.tb.Fatal(err)
	}
	return kp, pub
}

// creds writes a credentials file for a new user of the account signed
// by signer.
func creds(tb testing.TB, dir, name string, signer nkeys.KeyPair) string {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	tok, err := uc.Encode(signer)
	if err != nil {
		tb.Fatal(err)
	}
	seed, _ := kp.Seed()
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(dir, name+".creds")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestCreds: a server in operator mode (decentralised JWT
// authentication) admits the forwarder and the consumer with a
// credentials file passed through as NATS.Creds (`--creds`), and refuses
// a connection without one or with the credentials of an account the
// operator did not sign.
func TestCreds(t *testing.T) {
	dir := t.TempDir()
	op := newOperator(t)
	fleetKP, _ := op.account("FLEET", true)
	good := creds(t, dir, "forward", fleetKP)
	// An account of another operator: its users' JWTs do not chain to
	// the trusted operator.
	otherKP, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	stranger := creds(t, dir, "stranger", otherKP)

	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		DisableJetStreamBanner: true, TrustedOperators: []*jwt.OperatorClaims{op.claims}, AccountResolver: op.resolver,
		SystemAccount: op.sys}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)

	for name, c := range map[string]fleet.NATS{
		"no credentials":             {URL: url},
		"an unsigned account's":      {URL: url, Creds: stranger},
		"a missing credentials file": {URL: url, Creds: filepath.Join(dir, "absent.creds")},
	} {
		nc, err := c.Connect(nats.RetryOnFailedConnect(false), nats.MaxReconnects(0), nats.Timeout(2*time.Second))
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		}
	}

	cfg := fleet.NATS{URL: url, Creds: good}
	nc, err := cfg.Connect(nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	d := watchqtest.StartDaemon(t, rules)
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "operated", BootID: "b",
		Dir: t.TempDir(), NATS: cfg, CreateStream: true})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	newPublisher(t, d).publish(t, f, 3, 5)
	waitFor(t, 20*time.Second, "the acknowledgements", func() bool { return f.Stats().Acked == 2 })
	got := collect(t, js, fleet.ConsumerConfig{Hosts: []string{"operated"}}, 2, 20*time.Second)
	for i, m := range got {
		if m.Host != "operated" || pubNumber(m.Record) != uint64(3+i) {
			t.Errorf("message %d: %+v", i, m)
		}
	}
}
