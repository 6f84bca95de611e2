//go:build unix

package quarantine

import (
	"io/fs"
	"os"
	"syscall"
)

func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

func owner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// setOwner restores ownership where permitted (root); errors are ignored
// because an unprivileged restore keeps the restoring user's ownership.
func setOwner(path string, uid, gid int) {
	if uid >= 0 && gid >= 0 {
		os.Lchown(path, uid, gid)
	}
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
