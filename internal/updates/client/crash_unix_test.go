//go:build unix

package client

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/engine/enginedb"
)

// The crash helper: when MAMORI_TEST_CRASH is set, the test binary runs one
// update and kills itself with SIGKILL at the named install stage ("random":
// the parent kills it at a random moment).
func TestMain(m *testing.M) {
	if stage := os.Getenv("MAMORI_TEST_CRASH"); stage != "" {
		crashHelper(stage)
		return
	}
	os.Exit(m.Run())
}

func crashHelper(stage string) {
	root, _ := os.ReadFile(os.Getenv("MAMORI_TEST_ROOT"))
	d, err := New(Config{StateDir: os.Getenv("MAMORI_TEST_STATE"), Sources: []string{os.Getenv("MAMORI_TEST_SOURCE")}, TrustedRoot: root})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	d.store.crash = func(s string) {
		if s == stage {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Hour)
		}
	}
	fmt.Println("ready")
	start := time.Now()
	if _, err := d.Update(context.Background(), UpdateOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	fmt.Println("done", time.Since(start).Nanoseconds())
	os.Exit(0)
}

// checkValidEngine opens the store as the agent would after a crash: the
// current engine must load (checksum verified) and be one of want.
func checkValidEngine(t *testing.T, state string, want ...uint64) uint64 {
	t.Helper()
	st, err := OpenStore(state)
	if err != nil {
		t.Fatal(err)
	}
	v, p := st.Current()
	ok := false
	for _, w := range want {
		ok = ok || v == w
	}
	if !ok {
		t.Fatalf("current engine %d, want one of %v", v, want)
	}
	db, err := enginedb.LoadFile(p)
	if err != nil || db.Version() != v {
		t.Fatalf("current engine %d does not load: %v", v, err)
	}
	ents, _ := os.ReadDir(filepath.Join(state, "engines"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temporary file %s survived OpenStore", e.Name())
		}
	}
	return v
}

// runHelper runs the crash helper; with killAfter > 0 it is killed that long
// after it starts updating. It returns whether it was killed and, when it
// finished, how long its update took.
func runHelper(t *testing.T, e *env, stage string, killAfter time.Duration) (killed bool, took time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	rootFile := filepath.Join(t.TempDir(), "root.json")
	os.WriteFile(rootFile, e.r.Root, 0o644)
	cmd.Env = append(os.Environ(), "MAMORI_TEST_CRASH="+stage, "MAMORI_TEST_STATE="+e.state, "MAMORI_TEST_SOURCE="+e.r.Dir, "MAMORI_TEST_ROOT="+rootFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" && killAfter > 0 {
			time.AfterFunc(killAfter, func() { cmd.Process.Kill() })
		}
		if ns, ok := strings.CutPrefix(line, "done "); ok {
			n, _ := strconv.ParseInt(ns, 10, 64)
			took = time.Duration(n)
		}
	}
	err = cmd.Wait()
	if err == nil {
		return false, took
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, 0
		}
	}
	t.Fatalf("helper failed: %v: %s", err, stderr.String())
	return false, 0
}

func TestUpdate_KillAtEveryInstallStageLeavesAValidEngine(t *testing.T) {
	e := newEnv(t, 20, 4, 300)
	v1 := e.publish(10, 2)
	if _, err := e.update(e.direct(e.config(e.r.Dir))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stage string
		after func(v1, v2 uint64) uint64
	}{
		{StageEngineWritten, func(v1, v2 uint64) uint64 { return v1 }},
		{StagePointer, func(v1, v2 uint64) uint64 { return v2 }},
	} {
		v2 := e.publish(10, 2)
		if killed, _ := runHelper(t, e, tc.stage, 0); !killed {
			t.Fatalf("%s: the helper was not killed", tc.stage)
		}
		if got := checkValidEngine(t, e.state, v1, v2); got != tc.after(v1, v2) {
			t.Fatalf("killed at %s: engine %d", tc.stage, got)
		}
		// the next run completes the update
		if _, err := e.update(e.direct(e.config(e.r.Dir))); err != nil {
			t.Fatal(err)
		}
		e.mustBeAt(v2)
		v1 = v2
	}
}

func TestUpdate_KillAtRandomMomentsLeavesAValidEngine(t *testing.T) {
	e := newEnv(t, 40, 4, 4000)
	prev := e.publish(10, 2)
	if _, err := e.update(e.direct(e.config(e.r.Dir))); err != nil {
		t.Fatal(err)
	}
	// how long a whole helper run takes here (start-up included)
	prev = e.publish(200, 20)
	killed0, full := runHelper(t, e, "none", 0)
	if killed0 || full == 0 {
		t.Fatal("the measuring run did not finish")
	}
	e.mustBeAt(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	killed := 0
	for i := 0; i < 8; i++ {
		next := e.publish(200, 20)
		was := checkValidEngine(t, e.state, prev)
		// kill somewhere in the update (download, apply, write, swap) or just after
		if k, _ := runHelper(t, e, "random", time.Duration(rng.Int64N(int64(full)*6/5))+time.Millisecond); k {
			killed++
		}
		got := checkValidEngine(t, e.state, was, next)
		if got == was {
			if _, err := e.update(e.direct(e.config(e.r.Dir))); err != nil {
				t.Fatal(err)
			}
		}
		e.mustBeAt(next)
		prev = next
	}
	if killed == 0 {
		t.Fatal("no helper was killed mid-update; the test proves nothing")
	}
	t.Logf("%d of 8 updates killed (an update takes %v)", killed, full)
}
