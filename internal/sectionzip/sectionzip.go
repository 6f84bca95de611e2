// Package sectionzip packs the inventory sections of a check-in: small sets
// travel as they are, larger ones (a first replication, a changed software
// list) as gzip, which cuts both the bytes on the wire and the read buffers
// the server's TLS connections keep after a burst.
package sectionzip

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
)

// Threshold is the encoded size above which sections are compressed.
const Threshold = 1 << 10

// MaxUnpacked bounds decompression (a gzip bomb is refused).
const MaxUnpacked = 16 << 20

// ErrTooLarge is returned for sections that decompress beyond MaxUnpacked.
var ErrTooLarge = errors.New("compressed sections exceed 16 MiB once decompressed")

var writers = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return w
}}

// Pack sets ci.Sections or ci.SectionsGzip from secs.
func Pack(ci *agentproto.CheckIn, secs []*agentproto.InventorySection) error {
	ci.Sections, ci.SectionsGzip = nil, nil
	if len(secs) == 0 {
		return nil
	}
	msg := &agentproto.InventorySections{Sections: secs}
	if proto.Size(msg) <= Threshold {
		ci.Sections = secs
		return nil
	}
	raw, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w := writers.Get().(*gzip.Writer)
	defer writers.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(raw); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	ci.SectionsGzip = buf.Bytes()
	return nil
}

// Unpack returns the sections of a check-in, decompressing if needed. A
// check-in carrying both forms is refused.
func Unpack(ci *agentproto.CheckIn) ([]*agentproto.InventorySection, error) {
	if len(ci.SectionsGzip) == 0 {
		return ci.Sections, nil
	}
	if len(ci.Sections) > 0 {
		return nil, errors.New("a check-in carries either sections or sections_gzip, not both")
	}
	r, err := gzip.NewReader(bytes.NewReader(ci.SectionsGzip))
	if err != nil {
		return nil, errors.New("sections_gzip is not gzip data")
	}
	raw, err := io.ReadAll(io.LimitReader(r, MaxUnpacked+1))
	if err != nil {
		return nil, errors.New("sections_gzip is corrupt")
	}
	if len(raw) > MaxUnpacked {
		return nil, ErrTooLarge
	}
	var msg agentproto.InventorySections
	if err := proto.Unmarshal(raw, &msg); err != nil {
		return nil, errors.New("sections_gzip does not hold inventory sections")
	}
	return msg.Sections, nil
}
