//go:build unix

package scanner

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestScan_SkipsFIFOsAndSockets(t *testing.T) {
	root := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets unavailable: %v", err)
	}
	defer l.Close()
	writeFile(t, filepath.Join(root, "eicar.com"), eicar)
	done := make(chan struct{})
	var c *collected
	var sum Summary
	go func() {
		defer close(done)
		c, sum = scan(t, Options{}, root, filepath.Join(root, "fifo")) // also named as a root
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("scan blocked on a FIFO")
	}
	if sum.Skipped != 3 || sum.Files != 1 || len(c.dets) != 1 || len(c.issues) != 0 {
		t.Fatalf("summary %+v detections %v issues %v", sum, c.lines(root), c.issueKinds(root))
	}
}

func TestScan_SymlinkPolicyAndLoops(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "eicar.com"), eicar)
	writeFile(t, filepath.Join(root, "d", "eicar.com"), eicar)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(root, filepath.Join(root, "d", "loop")))                                  // loop to the root
	must(os.Symlink(filepath.Join(root, "d"), filepath.Join(root, "d", "self")))              // loop to itself
	must(os.Symlink(filepath.Join(outside, "eicar.com"), filepath.Join(root, "outside.com"))) // file link
	must(os.Symlink(outside, filepath.Join(root, "outdir")))                                  // dir link
	must(os.Symlink(filepath.Join(root, "missing"), filepath.Join(root, "dangling")))

	// Default: links met while walking are not followed.
	c, sum := scan(t, Options{}, root)
	if got := c.lines(root); strings.Join(got, ",") != "d/eicar.com body EICAR-Test-File" {
		t.Fatalf("default: detections %v", got)
	}
	if sum.Skipped != 5 || len(c.issues) != 0 {
		t.Fatalf("default: summary %+v issues %v", sum, c.issueKinds(root))
	}
	// A link named as a root is followed.
	c, _ = scan(t, Options{}, filepath.Join(root, "outside.com"), filepath.Join(root, "outdir"))
	if len(c.dets) != 2 {
		t.Fatalf("roots through links: %v", c.dets)
	}
	// FollowSymlinks: targets are scanned, each directory once, loops end.
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, sum = scan(t, Options{FollowSymlinks: true}, root)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("symlink loop not detected")
	}
	want := "d/eicar.com body EICAR-Test-File,outdir/eicar.com body EICAR-Test-File,outside.com body EICAR-Test-File"
	if got := c.lines(root); strings.Join(got, ",") != want {
		t.Fatalf("follow: detections %v", got)
	}
	loops := 0
	for _, i := range c.issues {
		if i.Kind != IssueSymlinkLoop {
			t.Errorf("unexpected issue %v", i)
		}
		loops++
	}
	if loops != 2 || sum.Errors != 0 {
		t.Fatalf("follow: %d loop warnings (want 2: d/loop, d/self), summary %+v", loops, sum)
	}
}
