package transport

import (
	"errors"
	"strings"
	"testing"
)

func TestValidDevice(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"pi-0042", true},
		{"edge_01.site:3", true},
		{"", false},
		{"a/b", false},
		{"a+", false},
		{"#", false},
		{"a b", false},
		{"ümlaut", false},
		{strings.Repeat("x", MaxDeviceID), true},
		{strings.Repeat("x", MaxDeviceID+1), false},
		{Hub, false},
		{Hub + ".2", false},
	}
	for _, tt := range tests {
		err := ValidDevice(tt.id)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidDevice(%q) = %v, want ok %v", tt.id, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrDeviceID) {
			t.Errorf("ValidDevice(%q) = %v, want ErrDeviceID", tt.id, err)
		}
	}
}

func TestTopicRoundTrip(t *testing.T) {
	for _, ch := range []Channel{ChHello, ChStatus, ChGet, ChCmd, ChData, ChOffer} {
		topic, err := Topic("dev-1", ch)
		if err != nil {
			t.Fatalf("Topic(dev-1, %s): %v", ch, err)
		}
		if want := "ap/v1/d/dev-1/" + string(ch); topic != want {
			t.Errorf("Topic = %q, want %q", topic, want)
		}
		dev, gotCh, err := ParseTopic(topic)
		if err != nil || dev != "dev-1" || gotCh != ch {
			t.Errorf("ParseTopic(%q) = %q, %q, %v", topic, dev, gotCh, err)
		}
	}
	if _, err := Topic("dev-1", "nope"); !errors.Is(err, ErrTopic) {
		t.Errorf("Topic(unknown channel) = %v, want ErrTopic", err)
	}
	if _, err := Topic("a/b", ChHello); !errors.Is(err, ErrDeviceID) {
		t.Errorf("Topic(bad device) = %v, want ErrDeviceID", err)
	}
	for _, bad := range []string{"", "ap/v1/d/", "ap/v1/d/x", "ap/v1/d/x/nope", "ap/v1/d/x/hello/more", "ap/v2/d/x/hello", "ap/v1/d/+/hello"} {
		if _, _, err := ParseTopic(bad); !errors.Is(err, ErrTopic) {
			t.Errorf("ParseTopic(%q) = %v, want ErrTopic", bad, err)
		}
	}
	if got, want := Filter(ChGet), "ap/v1/d/+/get"; got != want {
		t.Errorf("Filter = %q, want %q", got, want)
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		client, topic string
		write         bool
		want          bool
	}{
		{"A", "ap/v1/d/A/hello", true, true},
		{"A", "ap/v1/d/A/status", true, true},
		{"A", "ap/v1/d/A/get", true, true},
		{"A", "ap/v1/d/A/cmd", false, true},
		{"A", "ap/v1/d/A/data", false, true},
		{"A", "ap/v1/d/A/offer", false, true},
		// wrong direction on own subtree
		{"A", "ap/v1/d/A/hello", false, false},
		{"A", "ap/v1/d/A/cmd", true, false},
		{"A", "ap/v1/d/A/data", true, false},
		{"A", "ap/v1/d/A/offer", true, false},
		// someone else's subtree
		{"A", "ap/v1/d/B/cmd", false, false},
		{"A", "ap/v1/d/B/offer", false, false},
		{"A", "ap/v1/d/B/hello", true, false},
		// wildcards
		{"A", "ap/v1/d/+/offer", false, false},
		{"A", "ap/v1/d/A/#", false, false},
		{"A", "ap/v1/d/A/+", false, false},
		{"A", "#", false, false},
		{"A", "$share/g/ap/v1/d/A/cmd", false, false},
		// invalid client ids
		{"", "ap/v1/d//hello", true, false},
		{"A/B", "ap/v1/d/A/B/hello", true, false},
		// the hub
		{Hub, "ap/v1/d/A/cmd", true, true},
		{Hub, "ap/v1/d/A/offer", true, true},
		{Hub, "ap/v1/d/+/hello", false, true},
		{Hub, "$share/hubs/ap/v1/d/+/get", false, true},
		{Hub, "ap/v1/#", false, true},
		{Hub + ".2", "ap/v1/d/A/data", true, true},
		{Hub, "ap/v1/d/+/cmd", true, false},
		{Hub, "other/topic", true, false},
		{Hub, "#", false, false},
		{Hub + ".", "ap/v1/d/A/cmd", true, false},
		{Hub + "x", "ap/v1/d/A/cmd", true, false},
	}
	for _, tt := range tests {
		if got := Allowed(tt.client, tt.topic, tt.write); got != tt.want {
			t.Errorf("Allowed(%q, %q, write=%v) = %v, want %v", tt.client, tt.topic, tt.write, got, tt.want)
		}
	}
}
