package transport

import (
	"fmt"
	"strings"
)

// Channel is the last level of a device topic; it fixes the message type.
type Channel string

// Channels of a device's subtree ap/v1/d/{device}/.
const (
	ChHello  Channel = "hello"  // device → hub: Hello
	ChStatus Channel = "status" // device → hub: Status
	ChGet    Channel = "get"    // device → hub: Get
	ChCmd    Channel = "cmd"    // hub → device: Cmd
	ChData   Channel = "data"   // hub → device: Data
	ChOffer  Channel = "offer"  // hub → device: Offer, retained
)

// Prefix is the root of every AutoPatcher topic.
const Prefix = "ap/v1/"

// DevicePrefix is the root of the per-device subtrees.
const DevicePrefix = Prefix + "d/"

// Hub is the MQTT client id (and, with certificates, the subject common name)
// of the hub. Client ids equal to Hub or starting with Hub+"." (replicas, e.g.
// "autopatch-hub.2") may read and write everything under Prefix. No device id
// may start with Hub.
const Hub = "autopatch-hub"

// MaxDeviceID is the longest device id accepted, in bytes.
const MaxDeviceID = 128

// Valid reports whether ch is one of the channels above.
func (ch Channel) Valid() bool {
	switch ch {
	case ChHello, ChStatus, ChGet, ChCmd, ChData, ChOffer:
		return true
	}
	return false
}

// Up reports whether ch carries device → hub messages.
func (ch Channel) Up() bool { return ch == ChHello || ch == ChStatus || ch == ChGet }

// ValidDevice returns nil when id can be a device id: 1 to MaxDeviceID bytes
// of ASCII letters, digits, '.', '_', '-' or ':', not starting with Hub.
func ValidDevice(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrDeviceID)
	}
	if len(id) > MaxDeviceID {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrDeviceID, len(id), MaxDeviceID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':'
		if !ok {
			return fmt.Errorf("%w: %q has byte %q at %d", ErrDeviceID, id, c, i)
		}
	}
	if strings.HasPrefix(id, Hub) {
		return fmt.Errorf("%w: %q starts with the reserved %q", ErrDeviceID, id, Hub)
	}
	return nil
}

// Topic returns ap/v1/d/{device}/{ch}.
func Topic(device string, ch Channel) (string, error) {
	if err := ValidDevice(device); err != nil {
		return "", err
	}
	if !ch.Valid() {
		return "", fmt.Errorf("%w: unknown channel %q", ErrTopic, ch)
	}
	return DevicePrefix + device + "/" + string(ch), nil
}

// Filter returns the subscription filter ap/v1/d/+/{ch} the hub uses to
// receive ch from every device.
func Filter(ch Channel) string { return DevicePrefix + "+/" + string(ch) }

// ParseTopic splits ap/v1/d/{device}/{ch}.
func ParseTopic(topic string) (device string, ch Channel, err error) {
	rest, ok := strings.CutPrefix(topic, DevicePrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not under %s", ErrTopic, topic, DevicePrefix)
	}
	device, c, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q has no channel", ErrTopic, topic)
	}
	if err := ValidDevice(device); err != nil {
		return "", "", fmt.Errorf("%w: %q: %w", ErrTopic, topic, err)
	}
	ch = Channel(c)
	if !ch.Valid() {
		return "", "", fmt.Errorf("%w: %q: unknown channel %q", ErrTopic, topic, c)
	}
	return device, ch, nil
}

// unshared strips a $share/{group}/ prefix from filter; ok is false when the
// prefix has no group.
func unshared(filter string) (f string, ok bool) {
	rest, shared := strings.CutPrefix(filter, "$share/")
	if !shared {
		return filter, true
	}
	_, f, ok = strings.Cut(rest, "/")
	return f, ok
}

// IsHub reports whether clientID is the hub's identity.
func IsHub(clientID string) bool {
	return clientID == Hub || strings.HasPrefix(clientID, Hub+".") && len(clientID) > len(Hub)+1
}

// Allowed is the broker ACL: may clientID publish (write) to, or subscribe
// (!write) to, topic (a topic name or a subscription filter)?
//
//   - the hub (IsHub) may publish and subscribe anywhere under ap/v1/,
//     wildcards and $share/{group}/ shared subscriptions included;
//   - a device may publish only ap/v1/d/{self}/hello|status|get and subscribe
//     only to ap/v1/d/{self}/cmd|data|offer, no wildcards;
//   - everything else is refused.
func Allowed(clientID, topic string, write bool) bool {
	if IsHub(clientID) {
		t := topic
		if !write {
			var ok bool
			if t, ok = unshared(t); !ok {
				return false
			}
		}
		if write && strings.ContainsAny(t, "+#") {
			return false
		}
		return strings.HasPrefix(t, Prefix) || t == "ap/v1/#"
	}
	// ParseTopic validates the topic's device id, so one equal to clientID
	// makes clientID a valid device id too.
	device, ch, err := ParseTopic(topic)
	if err != nil || device != clientID {
		return false
	}
	return ch.Up() == write
}
