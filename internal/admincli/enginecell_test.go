package admincli

import (
	"testing"

	"github.com/mamori/mamori/internal/apiclient"
)

func TestEngineCell_ShowsVersionOutdatedAndTroubles(t *testing.T) {
	for _, c := range []struct {
		e    *apiclient.Engine
		want string
	}{
		{nil, "-"},
		{&apiclient.Engine{Version: 12, UpdateState: "idle", Latest: 12}, "12"},
		{&apiclient.Engine{Version: 12, UpdateState: "idle", Latest: 14, Outdated: true}, "12 (outdated: 14)"},
		{&apiclient.Engine{Version: 12, UpdateState: "held", Latest: 14, Outdated: true}, "12 (outdated: 14, held)"},
		{&apiclient.Engine{Version: 1, UpdateState: "no_source"}, "1 (no source)"},
	} {
		if got := engineCell(c.e); got != c.want {
			t.Errorf("engineCell(%+v) = %q, want %q", c.e, got, c.want)
		}
	}
}
