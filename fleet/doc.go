// Package fleet carries a fleet's notifications through NATS JetStream:
// a Forwarder on each host takes chosen classes of records from watchqd,
// as an ordinary client under the daemon's policy, and publishes each
// record's exact bytes to a stream under a subject naming the host and the
// class (watchq.<host>.block.error); Watch reads them back, anywhere, as
// an iterator.
//
//	f, err := fleet.New(fleet.Config{
//		Devices: []fleet.Class{fleet.ClassBlockError, fleet.ClassUSB},
//		NATS:    fleet.NATS{URL: "tls://nats.example.com:4222", Creds: "/etc/watchq/forward.creds"},
//	})
//	err = f.Run(ctx)
//
//	for m, err := range fleet.Watch(ctx, js, fleet.ConsumerConfig{Hosts: []string{"web1"}}) {
//		fmt.Println(m.Host, m.Seq, printer.Line(m.Record))
//	}
//
// Every message carries headers for the host, its boot id, the host's
// sequence number and the time the forwarder read the record, and
// Nats-Msg-Id host/boot/sequence, so the stream's duplicate window drops a
// record published twice. The forwarder spools every record on disk
// before publishing it, bounded in size: while the servers cannot be
// reached the backlog grows, and it is replayed in order when they can;
// past the bound the forwarder counts what it drops and publishes one loss
// record with the exact count where the records were lost. Losses in the
// forwarder's own queue are published the same way. A forwarder started
// again goes on after the last sequence the stream acknowledged.
//
// docs/fleet.md describes the topology, the delivery guarantee and the
// failure behaviour.
package fleet
