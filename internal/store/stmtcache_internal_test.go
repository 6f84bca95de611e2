package store

import (
	"fmt"
	"sync"
	"testing"
)

func TestStmtCache_ReusesBoundsAndDoesNotKeepFailures(t *testing.T) {
	db, err := OpenSQLite(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	for i := range maxCachedStatements + 20 {
		for range 2 {
			var got int
			if err := db.queryRowRO(ctx, fmt.Sprintf("SELECT ? + %d", i), 1).Scan(&got); err != nil || got != i+1 {
				t.Fatalf("query %d: %d, %v; want %d", i, got, err, i+1)
			}
		}
	}
	if n := len(db.roStmts.stmts); n != maxCachedStatements {
		t.Errorf("%d statements cached, want the bound %d", n, maxCachedStatements)
	}
	// Beyond the bound queries still run, unprepared.
	rows, err := db.queryRO(ctx, "SELECT ? + 1000", 1)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()

	db2, err := OpenSQLite(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := db2.queryRowRO(ctx, "SELECT FROM nowhere").Scan(new(int)); err == nil {
		t.Error("a malformed query gave no error")
	}
	if _, err := db2.queryRO(ctx, "SELECT FROM nowhere"); err == nil {
		t.Error("a malformed query gave no error")
	}
	if n := len(db2.roStmts.stmts); n != 0 {
		t.Errorf("%d statements cached after failures, want 0", n)
	}
}

func TestStmtCache_ConcurrentFirstUsesKeepOneStatement(t *testing.T) {
	db, err := OpenSQLite(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Go(func() {
			for i := range 8 {
				var got int
				if err := db.queryRowRO(t.Context(), fmt.Sprintf("SELECT ? + %d", i), g).Scan(&got); err != nil || got != g+i {
					errs <- fmt.Errorf("goroutine %d query %d: %d, %v", g, i, got, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(db.roStmts.stmts); n != 8 {
		t.Errorf("%d statements cached for 8 queries", n)
	}
}
