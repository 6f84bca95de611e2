package sectionzip

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
)

func software(n int) []*agentproto.InventorySection {
	sw := &agentproto.SoftwareInfo{Source: "dpkg"}
	for i := range n {
		sw.Packages = append(sw.Packages, &agentproto.Package{Name: fmt.Sprintf("pkg-%d", i), Version: "1.0", Architecture: "amd64"})
	}
	return []*agentproto.InventorySection{{Section: agentproto.Section_SECTION_SOFTWARE, Hash: []byte("0123456789abcdef"),
		Body: &agentproto.InventorySection_Software{Software: sw}}}
}

func TestPackUnpack_SmallStaysPlainLargeIsCompressedAndRoundTrips(t *testing.T) {
	var small agentproto.CheckIn
	if err := Pack(&small, software(2)); err != nil {
		t.Fatal(err)
	}
	if len(small.Sections) != 1 || small.SectionsGzip != nil {
		t.Fatalf("small sections were compressed: %d plain, %d gz bytes", len(small.Sections), len(small.SectionsGzip))
	}
	secs := software(800)
	var large agentproto.CheckIn
	if err := Pack(&large, secs); err != nil {
		t.Fatal(err)
	}
	plain := proto.Size(&agentproto.InventorySections{Sections: secs})
	if large.Sections != nil || len(large.SectionsGzip) == 0 || len(large.SectionsGzip) > plain/3 {
		t.Fatalf("large sections: %d plain sections, %d gz bytes for %d raw", len(large.Sections), len(large.SectionsGzip), plain)
	}
	got, err := Unpack(&large)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&agentproto.InventorySections{Sections: got}, &agentproto.InventorySections{Sections: secs}) {
		t.Fatal("round trip changed the sections")
	}
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestUnpack_HostileInput(t *testing.T) {
	cases := map[string]*agentproto.CheckIn{
		"not gzip":   {SectionsGzip: []byte("plain text")},
		"truncated":  {SectionsGzip: gz(bytes.Repeat([]byte{1}, 4096))[:20]},
		"not proto":  {SectionsGzip: gz([]byte{0xff, 0xff, 0xff, 0xff})},
		"both forms": {SectionsGzip: gz(nil), Sections: software(1)},
		"bomb":       {SectionsGzip: gz(make([]byte, MaxUnpacked+10))},
	}
	for name, ci := range cases {
		if _, err := Unpack(ci); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzUnpack(f *testing.F) {
	var ci agentproto.CheckIn
	Pack(&ci, software(100))
	f.Add(ci.SectionsGzip)
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		secs, err := Unpack(&agentproto.CheckIn{SectionsGzip: b})
		if err == nil && len(b) > 0 && proto.Size(&agentproto.InventorySections{Sections: secs}) > MaxUnpacked {
			t.Fatal("returned more than the limit")
		}
	})
}
