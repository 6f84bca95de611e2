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
// costs no document; any other announcement is checked against a computed
// one.
func TestConfigPusher_OnConnectComputesOnlyWhenTheRecordedVersionDiffers(t *testing.T) {
	for _, tc := range []struct {
		name              string
		versions          RecordedVersions
		announced         string
		wantDocumentCalls int32
	}{
		{"announces the recorded version", recorded{"c1": "v1"}, "v1", 0},
		{"announces an older version", recorded{"c1": "v2"}, "v1", 1},
		{"nothing recorded yet", recorded{}, "", 1},
		{"announces nothing", recorded{"c1": "v1"}, "", 1},
		{"no recorded versions available", nil, "v1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The computed document has the announced version: no push
			// follows, so no hub is needed.
			docs := &countingDocs{version: tc.announced}
			p := newConfigPusher(docs, tc.versions, nil, slog.New(slog.DiscardHandler), 0)
			p.onConnect(t.Context(), &agentConn{computerID: "c1", capability: capPushes}, tc.announced)
			if got := docs.calls.Load(); got != tc.wantDocumentCalls {
				t.Errorf("documents computed %d times, want %d", got, tc.wantDocumentCalls)
			}
		})
	}
}
