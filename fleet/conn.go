package fleet

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS says how to reach and authenticate to the NATS servers. Nothing is
// sent anywhere unless URL is set. The options are nats.go's own, passed
// through as they are.
type NATS struct {
	// URL is one server URL or several separated by commas
	// (nats://host:4222, tls://host:4222).
	URL string
	// Name names the connection in the server's monitoring.
	Name string

	// Creds is a credentials file (a user JWT and its NKey seed), for
	// decentralised (operator mode) authentication: nats.UserCredentials.
	Creds string
	// NKeySeed is a file holding an NKey seed ("SU..."), for NKey
	// authentication: nats.NkeyOptionFromSeed.
	NKeySeed string
	// User and Password, for servers configured with them: nats.UserInfo.
	User, Password string

	// TLSCA is a PEM file of the CAs that sign the servers' certificates
	// (nats.RootCAs); setting it requires TLS.
	TLSCA string
	// TLSCert and TLSKey are the client's certificate and key for mutual
	// TLS (nats.ClientCert).
	TLSCert, TLSKey string
	// TLSFirst does the TLS handshake before the server's INFO
	// (nats.TLSHandshakeFirst), for servers with handshake_first.
	TLSFirst bool

	// ReconnectWait is the pause between reconnection attempts (default
	// 500 ms); they go on forever.
	ReconnectWait time.Duration
}

// Options returns the nats.go options c stands for.
func (c NATS) Options() ([]nats.Option, error) {
	if c.URL == "" {
		return nil, errors.New("fleet: no NATS URL configured")
	}
	var o []nats.Option
	if c.Name != "" {
		o = append(o, nats.Name(c.Name))
	}
	if c.Creds != "" {
		o = append(o, nats.UserCredentials(c.Creds))
	}
	if c.NKeySeed != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("fleet: nkey seed %s: %w", c.NKeySeed, err)
		}
		o = append(o, opt)
	}
	if c.User != "" {
		o = append(o, nats.UserInfo(c.User, c.Password))
	}
	if c.TLSCA != "" {
		o = append(o, nats.RootCAs(c.TLSCA))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("fleet: a TLS client certificate needs both the certificate and the key")
	}
	if c.TLSCert != "" {
		o = append(o, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	if c.TLSFirst {
		o = append(o, nats.TLSHandshakeFirst())
	}
	wait := c.ReconnectWait
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	o = append(o, nats.MaxReconnects(-1), nats.ReconnectWait(wait), nats.RetryOnFailedConnect(true))
	return o, nil
}

// Connect connects to the servers with c's options and then extra ones.
// With RetryOnFailedConnect, a server that is down now is retried in the
// background.
func (c NATS) Connect(extra ...nats.Option) (*nats.Conn, error) {
	o, err := c.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URL, append(o, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("fleet: connect %s: %w", c.URL, err)
	}
	return nc, nil
}

// StreamConfig is the stream the forwarder creates with
// Config.CreateStream: every subject under prefix, file storage, the
// duplicate window that makes replays effectively-once, fast batch
// publishing (allow_batched: the forwarder's batches, batch.go), and the
// limits given (0: none).
func StreamConfig(name, prefix string, maxBytes int64, maxAge time.Duration) jetstream.StreamConfig {
	if name == "" {
		name = DefaultStream
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: "watchq fleet notifications",
		Subjects:    []string{prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  DefaultDuplicateWindow,
		MaxBytes:    orUnlimited(maxBytes),
		MaxAge:      maxAge,
		MaxMsgs:     -1,

		AllowBatchPublish: true,
	}
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}
