package hub_test

import (
	"errors"
	"testing"

	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/transport"
)

func TestDeployPolicy(t *testing.T) {
	tests := []struct {
		name    string
		req     hub.DeployRequest
		want    transport.Policy
		wantErr bool
	}{
		{"default", hub.DeployRequest{}, transport.Policy{Reboot: "now"}, false},
		{"now", hub.DeployRequest{Reboot: "now"}, transport.Policy{Reboot: "now"}, false},
		{"hub", hub.DeployRequest{Reboot: "hub"}, transport.Policy{Reboot: "hub"}, false},
		{"device's window", hub.DeployRequest{Reboot: "window"}, transport.Policy{Reboot: "window"}, false},
		{"window", hub.DeployRequest{Reboot: "window", Window: " 0  2 * * 1-5", WindowLength: 5400},
			transport.Policy{Reboot: "window", Window: "0 2 * * 1-5", WindowLength: 5400}, false},
		{"unknown policy", hub.DeployRequest{Reboot: "later"}, transport.Policy{}, true},
		{"window without length", hub.DeployRequest{Reboot: "window", Window: "0 2 * * *"}, transport.Policy{}, true},
		{"length without window", hub.DeployRequest{Reboot: "window", WindowLength: 60}, transport.Policy{}, true},
		{"daily form not carried", hub.DeployRequest{Reboot: "window", Window: "02:00-04:00", WindowLength: 60}, transport.Policy{}, true},
		{"window with now", hub.DeployRequest{Reboot: "now", Window: "0 2 * * *", WindowLength: 60}, transport.Policy{}, true},
		{"length with hub", hub.DeployRequest{Reboot: "hub", WindowLength: 60}, transport.Policy{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.req.Policy()
			if tt.wantErr {
				if !errors.Is(err, hub.ErrBadRequest) {
					t.Errorf("Policy() error = %v, want ErrBadRequest", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Policy() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
