package server

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/store/storetest"
)

// uploadRig has a real store with one computer and a diagnostics run
// delivered to it.
type uploadRig struct {
	db       *store.DB
	u        *uploads
	dir      string
	computer string
	run      string
}

func newUploadRig(t *testing.T, maxBytes int) *uploadRig {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tok := storetest.NewToken(t, db, store.GroupAll, 5)
	c := storetest.Enroll(t, db, tok, storetest.T0, store.Computer{Name: "pc"})
	task := &store.TaskRow{ID: uuid.NewString(), Name: "diag", Type: "diagnostics", Params: `{"max_bytes":` + strconv.Itoa(maxBytes) + `}`, GroupID: store.GroupAll}
	if err := db.CreateTask(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	run := &store.TaskRun{ID: uuid.NewString(), TaskID: task.ID, ComputerID: c.ID, Type: "diagnostics", Params: task.Params,
		State: store.RunDelivered, CreatedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Hour)}
	if err := db.CreateRuns(context.Background(), []*store.TaskRun{run}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "attachments")
	return &uploadRig{db: db, u: newUploads(db, dir, slog.New(slog.DiscardHandler)), dir: dir, computer: c.ID, run: run.ID}
}

// chunks returns a recv function over the given chunks, then io.EOF.
func chunks(cs ...*agentproto.UploadChunk) func() (*agentproto.UploadChunk, error) {
	i := 0
	return func() (*agentproto.UploadChunk, error) {
		if i == len(cs) {
			return nil, io.EOF
		}
		i++
		return cs[i-1], nil
	}
}

func (r *uploadRig) files(t *testing.T) []string {
	t.Helper()
	entries, _ := os.ReadDir(r.dir)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestUpload_StoresTheFileAndRecordsIt(t *testing.T) {
	r := newUploadRig(t, 1<<20)
	err := r.u.receive(context.Background(), r.computer, chunks(
		&agentproto.UploadChunk{RunId: r.run, Offset: 0, Data: []byte("hello "), Name: "d.tar.gz", Size: 11},
		&agentproto.UploadChunk{RunId: r.run, Offset: 6, Data: []byte("world"), Last: true},
	))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(r.dir, r.run+".tar.gz"))
	if err != nil || string(b) != "hello world" {
		t.Fatalf("stored %q %v", b, err)
	}
	run, _ := r.db.RunByID(context.Background(), r.run)
	if run.Attachment != r.run+".tar.gz" {
		t.Fatalf("attachment %q", run.Attachment)
	}
	if f := r.files(t); len(f) != 1 {
		t.Fatalf("files %v", f)
	}
}

func TestUpload_RefusesHostileUploadsAndLeavesNothing(t *testing.T) {
	r := newUploadRig(t, 10)
	other := uuid.NewString()
	for name, tc := range map[string]struct {
		computer string
		recv     func() (*agentproto.UploadChunk, error)
		code     errcode.Code
	}{
		"another computer's run": {other, chunks(&agentproto.UploadChunk{RunId: r.run, Data: []byte("x"), Last: true}), errcode.NotFound},
		"unknown run":            {r.computer, chunks(&agentproto.UploadChunk{RunId: "nope", Data: []byte("x"), Last: true}), errcode.NotFound},
		"announced too large":    {r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Size: 11, Data: []byte("x")}), errcode.Invalid},
		"larger than announced": {r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Data: []byte("0123456789")},
			&agentproto.UploadChunk{RunId: r.run, Offset: 10, Data: []byte("!"), Last: true}), errcode.Invalid},
		"gap": {r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Data: []byte("ab")},
			&agentproto.UploadChunk{RunId: r.run, Offset: 5, Data: []byte("c"), Last: true}), errcode.Invalid},
		"run switch": {r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Data: []byte("ab")},
			&agentproto.UploadChunk{RunId: "other", Offset: 2, Data: []byte("c"), Last: true}), errcode.Invalid},
		"short of announced": {r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Size: 8, Data: []byte("ab"), Last: true}), errcode.Invalid},
		"huge chunk":         {r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Data: make([]byte, maxUploadChunk+1)}), errcode.Invalid},
	} {
		err := r.u.receive(context.Background(), tc.computer, tc.recv)
		if errcode.Of(err) != tc.code {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
	if f := r.files(t); len(f) != 0 {
		t.Fatalf("left behind: %v", f)
	}
	run, _ := r.db.RunByID(context.Background(), r.run)
	if run.Attachment != "" {
		t.Fatalf("attachment recorded: %q", run.Attachment)
	}
	// Only diagnostics runs upload, and only before they finish.
	if err := r.db.CancelRun(context.Background(), r.run, time.Now()); err != nil {
		t.Fatal(err)
	}
	err := r.u.receive(context.Background(), r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Data: []byte("x"), Last: true}))
	if errcode.Of(err) != errcode.Invalid || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("upload to a cancelled run: %v", err)
	}
}

func TestUpload_TooManyAtOnceAreRefusedAsUnavailable(t *testing.T) {
	r := newUploadRig(t, 1<<20)
	for range maxConcurrentUploads {
		r.u.slots <- struct{}{}
	}
	err := r.u.receive(context.Background(), r.computer, chunks(&agentproto.UploadChunk{RunId: r.run, Data: []byte("x"), Last: true}))
	if errcode.Of(err) != errcode.Unavailable {
		t.Fatalf("%v", err)
	}
}
