package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Upload limits.
const (
	// MaxUploadBytes caps one upload whatever the run asks (a diagnostics
	// run's max_bytes is at most 100 MiB too).
	MaxUploadBytes = 100 << 20
	// maxUploadChunk bounds one chunk (agents send 256 KiB).
	maxUploadChunk = 1 << 20
	// maxConcurrentUploads bounds uploads in progress server-wide; more are
	// refused as unavailable (the run fails and can be retried).
	maxConcurrentUploads = 8
)

type uploadStore interface {
	RunByID(ctx context.Context, id string) (*store.TaskRun, error)
	SetRunAttachment(ctx context.Context, id, path string) error
}

// uploads receives the files task runs upload (diagnostics bundles) into
// dir as RUNID.tar.gz.
type uploads struct {
	store uploadStore
	dir   string
	log   *slog.Logger
	slots chan struct{}
}

func newUploads(st uploadStore, dir string, log *slog.Logger) *uploads {
	return &uploads{store: st, dir: dir, log: log, slots: make(chan struct{}, maxConcurrentUploads)}
}

// receive reads an upload of computerID's agent. Only a run of that
// computer that expects a file (diagnostics) and has not finished may
// upload; chunks must follow each other; the run's max_bytes and
// MaxUploadBytes bound the size. A refused upload leaves nothing behind.
func (u *uploads) receive(ctx context.Context, computerID string, recv func() (*agentproto.UploadChunk, error)) error {
	if u == nil || u.dir == "" {
		return errcode.New(errcode.Unavailable, "this server does not accept uploads")
	}
	select {
	case u.slots <- struct{}{}:
		defer func() { <-u.slots }()
	default:
		return errcode.New(errcode.Unavailable, "too many uploads in progress; retry later")
	}
	first, err := recv()
	if err != nil {
		return err
	}
	run, err := u.store.RunByID(ctx, first.GetRunId())
	if err != nil || run.ComputerID != computerID {
		return errcode.New(errcode.NotFound, "no such task run for this computer")
	}
	if run.Type != "diagnostics" {
		return errcode.New(errcode.Invalid, "a %s run does not upload files", run.Type)
	}
	switch run.State {
	case store.RunDelivered, store.RunRunning:
	default:
		return errcode.New(errcode.Invalid, "the run is %s", run.State)
	}
	limit := int64(MaxUploadBytes)
	var p struct {
		MaxBytes int64 `json:"max_bytes"`
	}
	if json.Unmarshal([]byte(run.Params), &p) == nil && p.MaxBytes > 0 {
		limit = min(limit, p.MaxBytes)
	}
	if first.GetSize() > uint64(limit) {
		return errcode.New(errcode.Invalid, "the file is %d bytes; this run accepts at most %d", first.GetSize(), limit)
	}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return err
	}
	name := run.ID + ".tar.gz"
	tmp, err := os.CreateTemp(u.dir, "upload-*")
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var written int64
	chunk := first
	for {
		if chunk.GetRunId() != run.ID {
			return errcode.New(errcode.Invalid, "chunks of one upload must name the same run")
		}
		if chunk.GetOffset() != uint64(written) {
			return errcode.New(errcode.Invalid, "chunk at offset %d, expected %d", chunk.GetOffset(), written)
		}
		if len(chunk.GetData()) > maxUploadChunk {
			return errcode.New(errcode.Invalid, "chunk larger than %d bytes", maxUploadChunk)
		}
		if written+int64(len(chunk.GetData())) > limit {
			return errcode.New(errcode.Invalid, "the upload exceeds the run's limit of %d bytes", limit)
		}
		n, err := tmp.Write(chunk.GetData())
		written += int64(n)
		if err != nil {
			return err
		}
		if chunk.GetLast() {
			break
		}
		chunk, err = recv()
		if errors.Is(err, io.EOF) {
			break // the client closed without marking the last chunk: what arrived is the file
		}
		if err != nil {
			return err
		}
	}
	if s := first.GetSize(); s > 0 && uint64(written) != s {
		return errcode.New(errcode.Invalid, "received %d bytes of the %d announced", written, s)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(u.dir, name)); err != nil {
		return err
	}
	keep = true
	if err := u.store.SetRunAttachment(ctx, run.ID, name); err != nil {
		return err
	}
	u.log.Info("task run upload stored", "run", run.ID, "computer", computerID, "bytes", written)
	return nil
}

// Upload implements the agent service's Upload call.
func (a *agentService) Upload(stream agentproto.Agent_UploadServer) error {
	sess, err := a.authenticate(stream.Context())
	if err != nil {
		return grpcError(err)
	}
	if err := a.uploads.receive(stream.Context(), sess.Computer.ID, stream.Recv); err != nil {
		a.log.Warn("upload refused", "computer", sess.Computer.ID, "err", err)
		return grpcError(err)
	}
	return stream.SendAndClose(&agentproto.UploadResult{RunId: "", Ok: true})
}
