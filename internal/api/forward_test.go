package api

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

// The reason another node gives for a retire or destroy is recorded as
// given (it once lost every reason with an "n" in it).
func TestReasonParam(t *testing.T) {
	for in, want := range map[string]string{
		"drain":                             "drain",
		"max_uses":                          "max_uses",
		"health":                            "health",
		"idle":                              "idle",
		"":                                  "requested",
		"two words":                         "requested",
		"line\nbreak":                       "requested",
		"UPPER":                             "requested",
		"much_too_long_to_be_a_reason_word": "requested",
	} {
		r := httptest.NewRequest("POST", "/v1/internal/sandboxes/sb_1/retire?reason="+url.QueryEscape(in), nil)
		if got := reasonParam(r); got != want {
			t.Errorf("reason %q recorded as %q, want %q", in, got, want)
		}
	}
}
