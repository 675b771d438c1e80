package transport_test

import (
	"context"
	"log"
	"os"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/transport"
)

// A device connects with its client certificate, waits for its offer,
// fetches and verifies the signed manifest, then fetches each component into
// its slot, copying the chunks it already holds.
func Example_device() {
	ctx := context.Background()
	const id = "pi-0042"
	conn, err := transport.Dial(ctx, transport.Config{
		Servers:  []string{"mqtts://hub.example:8883"},
		ClientID: id,
		TLS:      &transport.TLSSettings{CA: "/etc/autopatcher/ca.pem", Cert: "/etc/autopatcher/device.pem", Key: "/etc/autopatcher/device.key"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fetch, err := transport.NewFetcher(conn, id, transport.FetchOptions{})
	if err != nil {
		log.Fatal(err)
	}
	offers := make(chan *transport.Offer, 1)
	offerTopic, _ := transport.Topic(id, transport.ChOffer)
	if err := conn.Subscribe(offerTopic, func(_ string, m transport.Message) {
		select {
		case offers <- m.(*transport.Offer):
		default: // the engine is busy; the retained offer comes again with the next SUBSCRIBE (process start, lost session)
		}
	}); err != nil {
		log.Fatal(err)
	}
	o := <-offers
	signed, err := fetch.Manifest(ctx, o)
	if err != nil {
		log.Fatal(err)
	}
	var trust *bundle.Trust // the device's pinned keys
	m, err := bundle.VerifyManifest(signed, trust)
	if err != nil {
		log.Fatal(err)
	}
	slot, _ := os.OpenFile("/dev/mmcblk0p3", os.O_WRONLY, 0) // the inactive slot
	var done transport.Progress                              // persisted by the engine
	var local transport.Local                                // the active slot's chunk index
	for i := range m.Components {
		err := fetch.Fetch(ctx, transport.Request{
			Offer: o.ID, Digest: o.Digest, Index: i, Comp: &m.Components[i],
			Sink: slot, Done: done, Local: local,
		})
		if err != nil {
			log.Fatal(err)
		}
	}
}
