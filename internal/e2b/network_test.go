package e2b

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sandpool/sandpool/internal/sandbox"
)

func TestToNetwork(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name     string
		internet *bool
		body     *networkBody
		want     *sandbox.Network
	}{
		{"nothing said: the server's default", nil, nil, nil},
		{"nothing said, an empty network", nil, &networkBody{}, nil},
		{"no internet", &no, nil, &sandbox.Network{Egress: "none"}},
		{"internet", &yes, nil, &sandbox.Network{Egress: "open"}},
		{"all traffic denied: an allowlist", nil, &networkBody{AllowOut: []string{"pypi.org"}, DenyOut: []string{allTraffic, "10.1.0.0/16"}},
			&sandbox.Network{Egress: "allowlist", Allow: []string{"pypi.org"}, Deny: []string{"10.1.0.0/16"}}},
		{"all traffic denied, nothing allowed", nil, &networkBody{DenyOut: []string{allTraffic}},
			&sandbox.Network{Egress: "none"}},
		{"no internet but a list", &no, &networkBody{AllowOut: []string{"pypi.org"}},
			&sandbox.Network{Egress: "allowlist", Allow: []string{"pypi.org"}, Deny: []string{}}},
		{"open less a list", nil, &networkBody{DenyOut: []string{"ads.example.com"}},
			&sandbox.Network{Egress: "open", Deny: []string{"ads.example.com"}}},
		{"an entry in both lists is allowed, as in E2B", nil, &networkBody{AllowOut: []string{"a.example"}, DenyOut: []string{"a.example", "b.example"}},
			&sandbox.Network{Egress: "open", Deny: []string{"b.example"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := toNetwork(tt.internet, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("toNetwork (-want +got):\n%s", diff)
			}
			if got == nil {
				return
			}
			// And back: what E2B shows reads as the same policy.
			internet, shown := fromNetwork(*got)
			var body networkBody
			if shown != nil {
				body = networkBody{AllowOut: shown.AllowOut, DenyOut: shown.DenyOut}
			}
			again, err := toNetwork(&internet, &body)
			if err != nil || again == nil || !again.Equal(*got) {
				t.Errorf("shown as internet=%v %+v, read back as %+v (%v)", internet, shown, again, err)
			}
		})
	}
	for _, body := range []networkBody{{Rules: []byte(`{"api.example":[{}]}`)}, {EgressProxy: []byte(`{"address":"p:1080"}`)}} {
		if _, err := toNetwork(nil, &body); !errors.Is(err, errNotSupported) {
			t.Errorf("%+v: %v, want not supported", body, err)
		}
	}
}
