package builtin

import (
	"bytes"
	"testing"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/matcher"
)

var eicar = []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)

func scan(t *testing.T, data []byte) []matcher.Match {
	t.Helper()
	e, err := Engine()
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.NewScanner().Scan(bytes.NewReader(data), int64(len(data)), matcher.Options{AllMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	return res.Matches
}

func TestBuiltin_DetectsEICAR(t *testing.T) {
	if m := scan(t, eicar); len(m) != 2 || m[0].Kind != matcher.KindBody || m[1].Kind != matcher.KindHash {
		t.Fatalf("exact EICAR file: %+v (want body and MD5 matches)", m)
	}
	if m := scan(t, append(append([]byte(nil), eicar...), "  \r\n"...)); len(m) != 1 || m[0].Name != "EICAR-Test-File" {
		t.Fatalf("EICAR with trailing whitespace: %+v", m)
	}
	if m := scan(t, append([]byte("prefix "), eicar...)); len(m) != 0 {
		t.Fatalf("EICAR not at the start of the file must not match: %+v", m)
	}
	if m := scan(t, eicar[:60]); len(m) != 0 {
		t.Fatalf("truncated EICAR matched: %+v", m)
	}
}

func TestBuiltin_DatabaseIsVersionedAndLoadable(t *testing.T) {
	data, err := DB()
	if err != nil {
		t.Fatal(err)
	}
	db, err := enginedb.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if db.Version() != Version || db.RecordCount() != 2 {
		t.Fatalf("version %d records %d", db.Version(), db.RecordCount())
	}
}
