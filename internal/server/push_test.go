package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/mamori/mamori/internal/policy"
)

// countingDocs computes a document of a fixed version and counts calls.
type countingDocs struct {
	calls   atomic.Int32
	version string
}

func (d *countingDocs) Documents(_ context.Context, ids []string) (map[string]*policy.Document, error) {
	d.calls.Add(1)
	out := map[string]*policy.Document{}
	for _, id := range ids {
		out[id] = &policy.Document{Version: d.version}
	}
	return out, nil
}

type recorded map[string]string

func (r recorded) ConfigVersion(_ context.Context, id string) (string, error) { return r[id], nil }

// A connecting agent that announces the version recorded for its computer
// (read with the computer at set-up) costs no document; any other
// announcement is checked against a computed one. A change announced while
// the session was being set up makes the recorded version be read again.
func TestConfigPusher_OnConnectComputesOnlyWhenTheRecordedVersionDiffers(t *testing.T) {
	for _, tc := range []struct {
		name              string
		atSetUp           string           // the version read with the computer
		changedMeanwhile  bool             // Changed was called after that read
		versions          RecordedVersions // the store, read again after a change
		announced         string
		wantDocumentCalls int32
	}{
		{"announces the recorded version", "v1", false, recorded{"c1": "v1"}, "v1", 0},
		{"announces an older version", "v2", false, recorded{"c1": "v2"}, "v1", 1},
		{"nothing recorded yet", "", false, recorded{}, "", 1},
		{"announces nothing", "v1", false, recorded{"c1": "v1"}, "", 1},
		{"recorded version unchanged, no store needed", "v1", false, nil, "v1", 0},
		{"changed meanwhile: the store has a newer one", "v1", true, recorded{"c1": "v2"}, "v1", 1},
		{"changed meanwhile: another computer's change", "v1", true, recorded{"c1": "v1"}, "v1", 0},
		{"changed meanwhile, no store to read again", "v1", true, nil, "v1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The computed document has the announced version: no push
			// follows, so no hub is needed.
			docs := &countingDocs{version: tc.announced}
			p := newConfigPusher(docs, tc.versions, nil, slog.New(slog.DiscardHandler), 0)
			seen := p.changesSeen()
			if tc.changedMeanwhile {
				p.Changed([]string{"c9"})
			}
			p.onConnect(t.Context(), &agentConn{computerID: "c1", capability: capPushes}, tc.announced, tc.atSetUp, seen)
			if got := docs.calls.Load(); got != tc.wantDocumentCalls {
				t.Errorf("documents computed %d times, want %d", got, tc.wantDocumentCalls)
			}
		})
	}
}
