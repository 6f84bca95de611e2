package agent

import (
	"context"
	"errors"
	"io"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
)

// UploadChunkSize is the size of the chunks of an upload.
const UploadChunkSize = 256 << 10

// Upload sends a file of a task run to server with the Upload call, on the
// session's connection. size is the number of bytes r yields.
func (d *Direct) Upload(ctx context.Context, server, runID, name string, r io.Reader, size int64) error {
	c, err := d.conn(server)
	if err != nil {
		return err
	}
	stream, err := agentproto.NewAgentClient(c).Upload(ctx)
	if err != nil {
		return d.rpcError(server, c, err)
	}
	buf := make([]byte, UploadChunkSize)
	var off uint64
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			_ = stream.CloseSend()
			return rerr
		}
		last := n < len(buf) || off+uint64(n) >= uint64(size)
		chunk := &agentproto.UploadChunk{RunId: runID, Offset: off, Data: buf[:n], Last: last}
		if first {
			chunk.Name, chunk.Size, first = name, uint64(size), false
		}
		if err := stream.Send(chunk); err != nil {
			// The server ended the call; its reason comes with the result.
			_, rerr := stream.CloseAndRecv()
			if rerr == nil {
				rerr = err
			}
			return d.rpcError(server, c, rerr)
		}
		off += uint64(n)
		if last {
			break
		}
	}
	res, err := stream.CloseAndRecv()
	if err != nil {
		return d.rpcError(server, c, err)
	}
	if !res.GetOk() {
		return errcode.New(errcode.Invalid, "the server refused the upload: %s", res.GetError())
	}
	return nil
}
