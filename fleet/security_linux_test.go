package fleet_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "watchq test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &pki{ca: write("ca.pem", "CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	leaf := func(n int64, usage x509.ExtKeyUsage, certName, keyName string) (string, string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: certName},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(certName+".pem", "CERTIFICATE", der), write(keyName+".pem", "PRIVATE KEY", kb)
	}
	p.serverCert, p.serverKey = leaf(2, x509.ExtKeyUsageServerAuth, "server", "server-key")
	p.clientCert, p.clientKey = leaf(3, x509.ExtKeyUsageClientAuth, "client", "client-key")
	return p
}

// TestSecurity: a server that requires TLS with client certificates and
// NKey authentication. The forwarder and the consumer get through with the
// CA, the client certificate and the NKey seed passed through to nats.go,
// and not without them.
func TestSecurity(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		DisableJetStreamBanner: true, Nkeys: []*server.NkeyUser{{Nkey: pub}},
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: p.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	url := fmt.Sprintf("tls://127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)
	good := fleet.NATS{URL: url, TLSCA: p.ca, TLSCert: p.clientCert, TLSKey: p.clientKey, NKeySeed: seedFile}

	for name, c := range map[string]fleet.NATS{
		"no client certificate": {URL: url, TLSCA: p.ca, NKeySeed: seedFile},
		"no nkey":               {URL: url, TLSCA: p.ca, TLSCert: p.clientCert, TLSKey: p.clientKey},
		"no CA":                 {URL: url, TLSCert: p.clientCert, TLSKey: p.clientKey, NKeySeed: seedFile},
	} {
		nc, err := c.Connect(nats.RetryOnFailedConnect(false), nats.MaxReconnects(0), nats.Timeout(2*time.Second))
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		}
	}

	nc, err := good.Connect(nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	d := watchqtest.StartDaemon(t, rules)
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "secure", BootID: "b",
		Dir: t.TempDir(), NATS: good, CreateStream: true})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	newPublisher(t, d).publish(t, f, 7, 8)
	// The forwarder creates the stream.
	waitFor(t, 20*time.Second, "the acknowledgement", func() bool { return f.Stats().Acked == 1 })
	got := collect(t, js, fleet.ConsumerConfig{}, 1, 20*time.Second)
	if got[0].Host != "secure" || pubNumber(got[0].Record) != 7 {
		t.Errorf("got %+v", got[0])
	}
}
