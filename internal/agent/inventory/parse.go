package inventory

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/agentproto"
)

// Limits keep a hostile or corrupt system file from blowing up a check-in.
const (
	maxPackages   = 20000
	maxFieldLen   = 512
	maxInterfaces = 256
	maxDisks      = 256
	maxUsers      = 256
)

// clean makes s valid UTF-8 (protobuf strings must be) of bounded length.
func clean(s string) string {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > maxFieldLen {
		s = s[:maxFieldLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// ParseOSRelease reads /etc/os-release (KEY=value, optionally quoted).
func ParseOSRelease(b []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() && len(m) < 100 {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !osReleaseKey(k) {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
			v = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`").Replace(v)
		}
		m[k] = clean(v)
	}
	return m
}

// osReleaseKey reports whether k is a variable name (letters, digits and
// '_', at most maxFieldLen bytes); other lines are not assignments, and a
// key is returned as is, so it must be valid UTF-8 of bounded length.
func osReleaseKey(k string) bool {
	if k == "" || len(k) > maxFieldLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// ParseDpkgStatus reads /var/lib/dpkg/status and returns the installed
// packages sorted by name and architecture.
func ParseDpkgStatus(b []byte) []*agentproto.Package {
	var out []*agentproto.Package
	var name, version, arch, status string
	flush := func() {
		if name != "" && strings.HasSuffix(status, " installed") && len(out) < maxPackages {
			out = append(out, &agentproto.Package{Name: clean(name), Version: clean(version), Architecture: clean(arch)})
		}
		name, version, arch, status = "", "", "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			name = v
		case "Version":
			version = v
		case "Architecture":
			arch = v
		case "Status":
			status = v
		}
	}
	flush()
	sortPackages(out)
	return out
}

// ParseRPMQuery reads `rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n'`.
func ParseRPMQuery(b []byte) []*agentproto.Package {
	var out []*agentproto.Package
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || len(out) >= maxPackages {
			continue
		}
		if name := clean(f[0]); name != "" { // a blank name is no package
			out = append(out, &agentproto.Package{Name: name, Version: clean(f[1]), Architecture: clean(f[2])})
		}
	}
	sortPackages(out)
	return out
}

func sortPackages(p []*agentproto.Package) {
	slices.SortFunc(p, func(a, b *agentproto.Package) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.Architecture, b.Architecture); c != 0 {
			return c
		}
		return strings.Compare(a.Version, b.Version)
	})
}

// ParseMeminfo returns MemTotal in bytes from /proc/meminfo.
func ParseMeminfo(b []byte) uint64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil || n > 1<<50 {
				return 0
			}
			if len(f) > 1 && f[1] == "kB" {
				n *= 1024
			}
			return n
		}
	}
	return 0
}

// ParseCPUModel returns the first "model name" (x86) or "Model"/"Hardware"
// (ARM) of /proc/cpuinfo.
func ParseCPUModel(b []byte) string {
	var fallback string
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			return clean(v)
		case "Model", "Hardware", "cpu model":
			if fallback == "" {
				fallback = clean(v)
			}
		}
	}
	return fallback
}

// ParseBootTime returns btime (Unix seconds) from /proc/stat.
func ParseBootTime(b []byte) int64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// Mount is one line of /proc/mounts.
type Mount struct{ Device, Point, FS string }

var realFS = map[string]bool{"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "zfs": true, "f2fs": true,
	"vfat": true, "exfat": true, "ntfs": true, "ntfs3": true, "jfs": true, "reiserfs": true, "hfsplus": true, "apfs": true}

// ParseMounts returns the mounts of disk file systems from /proc/mounts,
// one per device (the first mount point), in file order.
func ParseMounts(b []byte) []Mount {
	var out []Mount
	seen := map[string]bool{}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !realFS[f[2]] || seen[f[0]] || len(out) >= maxDisks {
			continue
		}
		seen[f[0]] = true
		out = append(out, Mount{Device: clean(unescapeMount(f[0])), Point: clean(unescapeMount(f[1])), FS: f[2]})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for space) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// utmp record layout on Linux (glibc, 64-bit and 32-bit alike).
const (
	utmpSize        = 384
	utmpUserProcess = 7
)

// ParseUtmp returns the logged-in users of a Linux utmp file.
func ParseUtmp(b []byte) []*agentproto.LoggedInUser {
	var out []*agentproto.LoggedInUser
	for off := 0; off+utmpSize <= len(b) && len(out) < maxUsers; off += utmpSize {
		r := b[off : off+utmpSize]
		if int16(binary.LittleEndian.Uint16(r[0:2])) != utmpUserProcess {
			continue
		}
		user := cstr(r[44:76])
		if user == "" {
			continue
		}
		out = append(out, &agentproto.LoggedInUser{
			Name:      clean(user),
			Terminal:  clean(cstr(r[8:40])),
			Host:      clean(cstr(r[76:332])),
			SinceUnix: int64(int32(binary.LittleEndian.Uint32(r[340:344]))),
		})
	}
	slices.SortFunc(out, func(a, b *agentproto.LoggedInUser) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Terminal, b.Terminal)
	})
	return out
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
