package inventory

import (
	"bytes"
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
)

// ---- os-release ------------------------------------------------------------

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"debian", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
			map[string]string{"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "NAME": "Debian GNU/Linux", "VERSION_ID": "12", "ID": "debian"}},
		{"single quotes", "NAME='Fedora Linux'\n", map[string]string{"NAME": "Fedora Linux"}},
		{"escapes in double quotes", `PRETTY_NAME="Say \"hi\" \\ \$HOME \` + "`x\\`" + `"`,
			map[string]string{"PRETTY_NAME": "Say \"hi\" \\ $HOME `x`"}},
		{"escaped backslash before quote", `A="x\\"`, map[string]string{"A": `x\`}},
		{"comments and blank lines", "# a comment\n\n   # indented comment\nID=arch\n#ID=notarch\n",
			map[string]string{"ID": "arch"}},
		{"missing equals sign", "GARBAGE\nID=alpine\nALSO GARBAGE\n", map[string]string{"ID": "alpine"}},
		{"empty key", "=value\nID=void\n", map[string]string{"ID": "void"}},
		{"key not a variable name", "MY KEY=x\nK\xff=x\nK-1=x\nID=void\n", map[string]string{"ID": "void"}},
		{"overlong key", strings.Repeat("K", maxFieldLen+1) + "=x\n" + strings.Repeat("K", maxFieldLen) + "=y\n",
			map[string]string{strings.Repeat("K", maxFieldLen): "y"}},
		{"empty value", "VARIANT=\nID=nixos\n", map[string]string{"VARIANT": "", "ID": "nixos"}},
		{"equals in value", "HOME_URL=https://x.org/?a=b\n", map[string]string{"HOME_URL": "https://x.org/?a=b"}},
		{"unbalanced quote kept", "NAME=\"Debian\n", map[string]string{"NAME": `"Debian`}},
		{"mismatched quotes kept", "NAME=\"Debian'\n", map[string]string{"NAME": `"Debian'`}},
		{"lone quote kept", "NAME=\"\n", map[string]string{"NAME": `"`}},
		{"empty quotes", "NAME=\"\"\n", map[string]string{"NAME": ""}},
		{"CRLF and surrounding space", "  ID=ubuntu  \r\nVERSION_ID=\"24.04\"\r\n", map[string]string{"ID": "ubuntu", "VERSION_ID": "24.04"}},
		{"later key wins", "ID=a\nID=b\n", map[string]string{"ID": "b"}},
		{"no trailing newline", "ID=gentoo", map[string]string{"ID": "gentoo"}},
		{"invalid UTF-8 replaced", "NAME=ab\xffcd\n", map[string]string{"NAME": "ab\uFFFDcd"}},
		{"long value truncated", "NAME=" + strings.Repeat("x", 600) + "\n", map[string]string{"NAME": strings.Repeat("x", maxFieldLen)}},
		{"empty input", "", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseOSRelease([]byte(tt.in))
			if !maps.Equal(got, tt.want) {
				t.Errorf("ParseOSRelease(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseOSRelease_BoundsKeyCount(t *testing.T) {
	var b strings.Builder
	for i := range 500 {
		b.WriteString("K")
		b.WriteString(strings.Repeat("X", i%7))
		b.WriteString(string(rune('A' + i%26)))
		b.WriteString(string(rune('A' + i/26)))
		b.WriteString("=v\n")
	}
	if n := len(ParseOSRelease([]byte(b.String()))); n != 100 {
		t.Errorf("%d keys, want at most (and here exactly) 100", n)
	}
}

// ---- package lists -----------------------------------------------------------

type pkg struct{ Name, Version, Arch string }

func pkgs(ps []*agentproto.Package) []pkg {
	out := []pkg{}
	for _, p := range ps {
		out = append(out, pkg{p.Name, p.Version, p.Architecture})
	}
	return out
}

const dpkgStatus = `Package: zlib1g
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 168
Architecture: amd64
Multi-Arch: same
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime
 zlib is a library implementing the deflate compression method found
 in gzip and PKZIP.
 .
 Package: fake-from-description
 Version: 99

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
Conffiles:
 /etc/removed.conf 0123456789abcdef

Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0

Package: unpacked
Status: install ok unpacked
Architecture: amd64
Version: 2.1

Package: gone
Status: purge ok not-installed
Architecture: amd64

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u4

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4

Package: bash
Version: 5.2.15-2+b2
Architecture: amd64
Status: install ok installed
Description: GNU Bourne Again SHell
	Package: tab-continuation

Package: held-kernel
Status: hold ok installed
Architecture: amd64
Version: 6.1.0-18

Package: last-without-newline
Status: install ok installed
Architecture: all
Version: 0.1`

func TestParseDpkgStatus(t *testing.T) {
	got := pkgs(ParseDpkgStatus([]byte(dpkgStatus)))
	// Installed means the state word is "installed", whatever the
	// selection (install, hold) says; half-installed, unpacked,
	// config-files and not-installed packages are not installed.
	want := []pkg{
		{"bash", "5.2.15-2+b2", "amd64"},
		{"held-kernel", "6.1.0-18", "amd64"},
		{"last-without-newline", "0.1", "all"},
		{"libc6", "2.36-9+deb12u4", "amd64"},
		{"libc6", "2.36-9+deb12u4", "i386"},
		{"zlib1g", "1:1.2.13.dfsg-1", "amd64"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParseDpkgStatus\n got %v\nwant %v", got, want)
	}
}

func TestParseDpkgStatus_EdgeCases(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []pkg
	}{
		{"empty", "", []pkg{}},
		{"status only", "Status: install ok installed\n", []pkg{}},
		{"no status", "Package: a\nVersion: 1\n", []pkg{}},
		{"blank lines between stanzas", "\n\nPackage: a\nStatus: install ok installed\n\n\n\nPackage: b\nStatus: install ok installed\n\n",
			[]pkg{{"a", "", ""}, {"b", "", ""}}},
		{"status with trailing space", "Package: a\nStatus: install ok installed   \nVersion: 1\n", []pkg{{"a", "1", ""}}},
		{"installed is a whole word", "Package: a\nStatus: install ok notinstalled\n", []pkg{}},
		{"same name sorted by arch then version", "Package: x\nStatus: install ok installed\nArchitecture: i386\nVersion: 2\n\n" +
			"Package: x\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3\n\n" +
			"Package: x\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n",
			[]pkg{{"x", "1", "amd64"}, {"x", "3", "amd64"}, {"x", "2", "i386"}}},
		{"invalid UTF-8 cleaned", "Package: a\xff\nStatus: install ok installed\n", []pkg{{"a\uFFFD", "", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pkgs(ParseDpkgStatus([]byte(tt.in))); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseDpkgStatus_CapsPackageCount(t *testing.T) {
	var b bytes.Buffer
	for i := range maxPackages + 50 {
		b.WriteString("Package: p")
		b.WriteString(strings.Repeat("x", i%5))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString("\nStatus: install ok installed\n\n")
	}
	if n := len(ParseDpkgStatus(b.Bytes())); n != maxPackages {
		t.Errorf("%d packages, want the cap %d", n, maxPackages)
	}
}

func TestParseRPMQuery(t *testing.T) {
	in := "zlib-ng-compat\t2.1.6-2.fc40\tx86_64\n" +
		"bash\t5.2.26-3.fc40\tx86_64\n" +
		"gpg-pubkey\ta15b79cc-63d04c2c\t(none)\n" +
		"glibc\t2.39-8.fc40\ti686\n" +
		"glibc\t2.39-8.fc40\tx86_64\n" +
		"two\tfields\n" +
		"four\tfields\tare\ttoo many\n" +
		"\t1.0\tnoarch\n" + // no name
		" \t\t0\n" + // blank name
		"\n" +
		"not tab separated x86_64\n" +
		"  padded  \t 1.0 \tnoarch" // no trailing newline
	want := []pkg{
		{"bash", "5.2.26-3.fc40", "x86_64"},
		{"glibc", "2.39-8.fc40", "i686"},
		{"glibc", "2.39-8.fc40", "x86_64"},
		{"gpg-pubkey", "a15b79cc-63d04c2c", "(none)"},
		{"padded", "1.0", "noarch"},
		{"zlib-ng-compat", "2.1.6-2.fc40", "x86_64"},
	}
	if got := pkgs(ParseRPMQuery([]byte(in))); !slices.Equal(got, want) {
		t.Errorf("ParseRPMQuery\n got %v\nwant %v", got, want)
	}
	if got := ParseRPMQuery(nil); len(got) != 0 {
		t.Errorf("ParseRPMQuery(nil) = %v", got)
	}
}

// ---- /proc files ---------------------------------------------------------------

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want uint64
	}{
		{"kB", "MemTotal:       16318464 kB\nMemFree:         1000000 kB\n", 16318464 * 1024},
		{"not first line", "MemFree: 1 kB\nMemTotal: 2048 kB\n", 2048 * 1024},
		{"no unit is bytes", "MemTotal: 5000\n", 5000},
		{"unknown unit is taken as bytes", "MemTotal: 5000 MB\n", 5000},
		{"missing", "MemFree: 1 kB\n", 0},
		{"empty value", "MemTotal:\n", 0},
		{"not a number", "MemTotal: lots kB\n", 0},
		{"negative", "MemTotal: -5 kB\n", 0},
		{"absurdly large", "MemTotal: 9999999999999999 kB\n", 0},
		{"largest accepted", "MemTotal: 1125899906842624 kB\n", 1 << 60},
		{"overflowing uint64", "MemTotal: 99999999999999999999999 kB\n", 0},
		{"prefix must start the line", " MemTotal: 5 kB\n", 0},
		{"empty input", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseMeminfo([]byte(tt.in)); got != tt.want {
				t.Errorf("ParseMeminfo(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

const cpuinfoX86 = `processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 142
model name	: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
stepping	: 10
flags		: fpu vme de pse

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
`

const cpuinfoRaspberryPi = `processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8

Hardware	: BCM2835
Revision	: c03111
Serial		: 10000000abcdef01
Model		: Raspberry Pi 4 Model B Rev 1.1
`

func TestParseCPUModel(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"x86", cpuinfoX86, "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"},
		{"ARM Hardware before Model", cpuinfoRaspberryPi, "BCM2835"},
		{"ARM Model only", "processor\t: 0\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n", "Raspberry Pi 5 Model B Rev 1.0"},
		{"ARM model name beats Model", "Model\t: Board X\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n", "ARMv7 Processor rev 4 (v7l)"},
		{"MIPS", "system type\t\t: MediaTek MT7621\ncpu model\t\t: MIPS 1004Kc V2.15\n", "MIPS 1004Kc V2.15"},
		{"colon in value", "model name\t: AMD Ryzen: Pro\n", "AMD Ryzen: Pro"},
		{"missing", "processor\t: 0\nflags\t: fpu\n", ""},
		{"no colon", "model name AMD\n", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCPUModel([]byte(tt.in)); got != tt.want {
				t.Errorf("ParseCPUModel = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseBootTime(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
	}{
		{"proc stat", "cpu  10 20 30\ncpu0 1 2 3\nintr 12345\nctxt 999\nbtime 1700000000\nprocesses 4242\n", 1700000000},
		{"trailing space", "btime 1700000000  \n", 1700000000},
		{"first valid wins", "btime x\nbtime 42\nbtime 43\n", 42},
		{"missing", "cpu 1 2 3\n", 0},
		{"zero", "btime 0\n", 0},
		{"negative", "btime -5\n", 0},
		{"not a number", "btime soon\n", 0},
		{"overflow", "btime 99999999999999999999\n", 0},
		{"prefix needs the space", "btime1700000000\n", 0},
		{"empty", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseBootTime([]byte(tt.in)); got != tt.want {
				t.Errorf("ParseBootTime = %d, want %d", got, tt.want)
			}
		})
	}
}

const procMounts = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=1632836k,mode=755 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077 0 0
/dev/sdb1 /media/alice/My\040Disk exfat rw,nosuid,nodev 0 0
/dev/nvme0n1p2 /var/lib/docker ext4 rw,relatime 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw,relatime 0 0
/dev/mapper/vg-home /home xfs rw,relatime 0 0
/dev/sdc1 /mnt/tab\011and\134back btrfs rw 0 0
/dev/sdd1 /mnt/bad\9escape\400big\04 ext4 rw 0 0
too short
rpool/ROOT/ubuntu / zfs rw 0 0
`

func TestParseMounts(t *testing.T) {
	want := []Mount{
		{"/dev/nvme0n1p2", "/", "ext4"},
		{"/dev/nvme0n1p1", "/boot/efi", "vfat"},
		{"/dev/sdb1", "/media/alice/My Disk", "exfat"},
		{"/dev/mapper/vg-home", "/home", "xfs"},
		{"/dev/sdc1", "/mnt/tab\tand\\back", "btrfs"},
		{"/dev/sdd1", `/mnt/bad\9escape\400big\04`, "ext4"},
		{"rpool/ROOT/ubuntu", "/", "zfs"},
	}
	if got := ParseMounts([]byte(procMounts)); !slices.Equal(got, want) {
		t.Errorf("ParseMounts\n got %q\nwant %q", got, want)
	}
	if got := ParseMounts(nil); len(got) != 0 {
		t.Errorf("ParseMounts(nil) = %v", got)
	}
}

func TestParseMounts_CapsDiskCount(t *testing.T) {
	var b strings.Builder
	for i := range maxDisks + 10 {
		b.WriteString("/dev/d")
		b.WriteString(strings.Repeat("x", i/26))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(" /mnt ext4 rw 0 0\n")
	}
	if n := len(ParseMounts([]byte(b.String()))); n != maxDisks {
		t.Errorf("%d mounts, want the cap %d", n, maxDisks)
	}
}

// ---- utmp ----------------------------------------------------------------------

// utmpRecord mirrors glibc's struct utmp on Linux (384 bytes, little endian).
type utmpRecord struct {
	Type    int16
	_       [2]byte
	PID     int32
	Line    [32]byte
	ID      [4]byte
	User    [32]byte
	Host    [256]byte
	Exit    [2]int16
	Session int32
	TVSec   int32
	TVUsec  int32
	AddrV6  [4]int32
	Unused  [20]byte
}

const (
	utBootTime     = 2
	utLoginProcess = 6
	utDeadProcess  = 8
)

func utmp(typ int16, user, line, host string, sec int32) utmpRecord {
	r := utmpRecord{Type: typ, PID: 1234, TVSec: sec}
	copy(r.User[:], user)
	copy(r.Line[:], line)
	copy(r.Host[:], host)
	return r
}

func utmpFile(t testing.TB, recs ...utmpRecord) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, r := range recs {
		if err := binary.Write(&b, binary.LittleEndian, &r); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

type loggedIn struct {
	Name, Terminal, Host string
	Since                int64
}

func users(us []*agentproto.LoggedInUser) []loggedIn {
	out := []loggedIn{}
	for _, u := range us {
		out = append(out, loggedIn{u.Name, u.Terminal, u.Host, u.SinceUnix})
	}
	return out
}

func TestParseUtmp(t *testing.T) {
	if n := binary.Size(utmpRecord{}); n != utmpSize {
		t.Fatalf("test record is %d bytes, want %d", n, utmpSize)
	}
	long := strings.Repeat("u", 32) // fills ut_user with no NUL
	b := utmpFile(t,
		utmp(utBootTime, "reboot", "~", "6.1.0-18-amd64", 1700000000),
		utmp(utLoginProcess, "LOGIN", "tty2", "", 1700000001),
		utmp(utmpUserProcess, "zoe", "pts/1", "10.0.0.5", 1700000100),
		utmp(utmpUserProcess, "alice", "tty1", "", 1700000200),
		utmp(utDeadProcess, "carol", "pts/2", "10.0.0.6", 1700000300),
		utmp(utmpUserProcess, "", "pts/3", "nobody", 1700000400), // no user name
		utmp(utmpUserProcess, "alice", "pts/0", "laptop.example.net", -1),
		utmp(utmpUserProcess, long, "pts/4", strings.Repeat("h", 256), 1700000500),
	)
	truncated := utmpFile(t, utmp(utmpUserProcess, "trunc", "pts/9", "", 1))[:utmpSize-1]
	b = append(b, truncated...)

	want := []loggedIn{
		{"alice", "pts/0", "laptop.example.net", -1},
		{"alice", "tty1", "", 1700000200},
		{"zoe", "pts/1", "10.0.0.5", 1700000100},
		{long, "pts/4", strings.Repeat("h", 256), 1700000500},
	}
	slices.SortFunc(want, func(a, b loggedIn) int { return strings.Compare(a.Name+"\x00"+a.Terminal, b.Name+"\x00"+b.Terminal) })
	if got := users(ParseUtmp(b)); !slices.Equal(got, want) {
		t.Errorf("ParseUtmp\n got %v\nwant %v", got, want)
	}
	if got := ParseUtmp(truncated); len(got) != 0 {
		t.Errorf("a lone truncated record gave %v", got)
	}
	if got := ParseUtmp(nil); len(got) != 0 {
		t.Errorf("ParseUtmp(nil) = %v", got)
	}
}

func TestParseUtmp_CapsUserCount(t *testing.T) {
	var recs []utmpRecord
	for range maxUsers + 5 {
		recs = append(recs, utmp(utmpUserProcess, "bob", "pts/0", "", 1))
	}
	if n := len(ParseUtmp(utmpFile(t, recs...))); n != maxUsers {
		t.Errorf("%d users, want the cap %d", n, maxUsers)
	}
}

// ---- fuzzing -------------------------------------------------------------------

// checkString fails unless s is what a parser may hand to protobuf.
func checkString(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%s %q is not valid UTF-8", what, s)
	}
	if len(s) > maxFieldLen {
		t.Fatalf("%s is %d bytes, more than %d", what, len(s), maxFieldLen)
	}
}

func checkPackages(t *testing.T, ps []*agentproto.Package) {
	t.Helper()
	if len(ps) > maxPackages {
		t.Fatalf("%d packages, more than %d", len(ps), maxPackages)
	}
	for _, p := range ps {
		checkString(t, "name", p.Name)
		checkString(t, "version", p.Version)
		checkString(t, "architecture", p.Architecture)
		if p.Name == "" {
			t.Fatalf("package without a name: %v", p)
		}
	}
	if !slices.IsSortedFunc(ps, comparePackages) {
		t.Fatalf("packages not sorted: %v", pkgs(ps))
	}
	Hash(&agentproto.SoftwareInfo{Packages: ps}) // panics on anything protobuf refuses
}

func comparePackages(a, b *agentproto.Package) int {
	return cmpStrings(a.Name, b.Name, a.Architecture, b.Architecture, a.Version, b.Version)
}

func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

func FuzzParseOSRelease(f *testing.F) {
	f.Add([]byte("NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n"))
	f.Add([]byte(`PRETTY_NAME="a \"b\" \\ \$c"` + "\n# comment\nBROKEN\n=x\nK='v'\n"))
	f.Add([]byte("K=\xff\xfe\nK\xff=v\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := ParseOSRelease(b)
		if len(m) > 100 {
			t.Fatalf("%d keys", len(m))
		}
		for k, v := range m {
			checkString(t, "key", k)
			checkString(t, "value of "+k, v)
			if k == "" {
				t.Fatal("empty key")
			}
		}
	})
}

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add([]byte(dpkgStatus))
	f.Add([]byte("Package: a\nStatus: install ok installed\n\nPackage: a\nStatus: install ok installed\nVersion: \xff\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkPackages(t, ParseDpkgStatus(b))
	})
}

func FuzzParseRPMQuery(f *testing.F) {
	f.Add([]byte("bash\t5.2.26-3.fc40\tx86_64\nglibc\t2.39-8.fc40\ti686\n\t\t\n"))
	f.Add([]byte("b\xff\t1\tx\na\t\t\n"))
	f.Add([]byte("0\t0000000000000\t000000\n \t\t0")) // found by fuzzing: a blank name
	f.Fuzz(func(t *testing.T, b []byte) {
		checkPackages(t, ParseRPMQuery(b))
	})
}

func FuzzParseMeminfo(f *testing.F) {
	f.Add([]byte("MemTotal:       16318464 kB\n"))
	f.Add([]byte("MemTotal: 1125899906842624 kB\n"))
	f.Add([]byte("MemTotal: 18446744073709551615\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := ParseMeminfo(b); n > 1<<60 {
			t.Fatalf("MemTotal %d bytes is beyond the 2^60 bound", n)
		}
	})
}

func FuzzParseCPUModel(f *testing.F) {
	f.Add([]byte(cpuinfoX86))
	f.Add([]byte(cpuinfoRaspberryPi))
	f.Add([]byte("model name: \xff" + strings.Repeat("x", 600)))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkString(t, "cpu model", ParseCPUModel(b))
	})
}

func FuzzParseBootTime(f *testing.F) {
	f.Add([]byte("cpu 1 2 3\nbtime 1700000000\n"))
	f.Add([]byte("btime -1\nbtime 9223372036854775807\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := ParseBootTime(b); n < 0 {
			t.Fatalf("boot time %d is negative", n)
		}
	})
}

func FuzzParseMounts(f *testing.F) {
	f.Add([]byte(procMounts))
	f.Add([]byte("/dev/a\\377\\376 /m\\040n ext4 rw 0 0\n/dev/a\\377\\376 /x ext4 rw 0 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms := ParseMounts(b)
		if len(ms) > maxDisks {
			t.Fatalf("%d mounts", len(ms))
		}
		for _, m := range ms {
			checkString(t, "device", m.Device)
			checkString(t, "mount point", m.Point)
			checkString(t, "file system", m.FS)
			if !realFS[m.FS] {
				t.Fatalf("file system %q is not a disk file system", m.FS)
			}
		}
	})
}

func FuzzParseUtmp(f *testing.F) {
	f.Add(utmpFile(f, utmp(utmpUserProcess, "alice", "pts/0", "host", 1), utmp(utBootTime, "reboot", "~", "", 2)))
	f.Add(append(utmpFile(f, utmp(utmpUserProcess, "b\xff\xfe", strings.Repeat("\xe2\x82", 16), "", -1)), 7, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		us := ParseUtmp(b)
		if len(us) > maxUsers || len(us) > len(b)/utmpSize {
			t.Fatalf("%d users from %d bytes", len(us), len(b))
		}
		for _, u := range us {
			checkString(t, "user", u.Name)
			checkString(t, "terminal", u.Terminal)
			checkString(t, "host", u.Host)
		}
		if !slices.IsSortedFunc(us, func(a, b *agentproto.LoggedInUser) int { return cmpStrings(a.Name, b.Name, a.Terminal, b.Terminal) }) {
			t.Fatalf("users not sorted: %v", users(us))
		}
		Hash(&agentproto.UsersInfo{LoggedIn: us})
	})
}

// ---- hashing and snapshots -------------------------------------------------------

func sampleSoftware() *agentproto.SoftwareInfo {
	return &agentproto.SoftwareInfo{Source: "dpkg", Packages: []*agentproto.Package{
		{Name: "bash", Version: "5.2.15-2", Architecture: "amd64"},
		{Name: "zlib1g", Version: "1:1.2.13", Architecture: "amd64"},
	}}
}

func TestHash_StableForEqualMessagesAndSensitiveToVersions(t *testing.T) {
	a, b := sampleSoftware(), sampleSoftware()
	ha := Hash(a)
	if len(ha) != HashLen {
		t.Fatalf("hash is %d bytes, want %d", len(ha), HashLen)
	}
	if !bytes.Equal(ha, Hash(b)) || !bytes.Equal(ha, Hash(a)) || !bytes.Equal(ha, Hash(proto.Clone(a))) {
		t.Error("equal messages hash differently")
	}
	b.Packages[1].Version = "1:1.2.14"
	if bytes.Equal(ha, Hash(b)) {
		t.Error("a changed package version leaves the hash unchanged")
	}
	c := sampleSoftware()
	c.Packages[0].Architecture = "i386"
	if bytes.Equal(ha, Hash(c)) {
		t.Error("a changed architecture leaves the hash unchanged")
	}
	// Different section kinds with empty bodies must not be confused by a
	// later check either, but their (empty) encodings hash the same; what
	// the hash identifies is a body, not a section.
	if !bytes.Equal(Hash(&agentproto.SystemInfo{}), Hash(&agentproto.UsersInfo{})) {
		t.Error("empty bodies of different kinds hash differently: Hash is not over the encoding alone")
	}
}

func TestNewSnapshot_OneSectionPerBody(t *testing.T) {
	sys := &agentproto.SystemInfo{Hostname: "web-01", OsFamily: "linux"}
	hw := &agentproto.HardwareInfo{CpuModel: "x", CpuCores: 4}
	nw := &agentproto.NetworkInfo{Interfaces: []*agentproto.NetworkInterface{{Name: "lo", Loopback: true}}}
	sw := sampleSoftware()
	us := &agentproto.UsersInfo{LoggedIn: []*agentproto.LoggedInUser{{Name: "alice"}}}
	ag := &agentproto.AgentInfo{Version: "1.0.0", CapabilityVersion: agentproto.CapabilityVersion}

	bodyOf := func(s *agentproto.InventorySection) proto.Message {
		switch b := s.Body.(type) {
		case *agentproto.InventorySection_System:
			return b.System
		case *agentproto.InventorySection_Hardware:
			return b.Hardware
		case *agentproto.InventorySection_Network:
			return b.Network
		case *agentproto.InventorySection_Software:
			return b.Software
		case *agentproto.InventorySection_Users:
			return b.Users
		case *agentproto.InventorySection_Agent:
			return b.Agent
		}
		return nil
	}
	check := func(t *testing.T, snap *Snapshot, want map[agentproto.Section]proto.Message) {
		t.Helper()
		if len(snap.Sections) != len(want) {
			t.Fatalf("%d sections, want %d", len(snap.Sections), len(want))
		}
		hashes := snap.Hashes()
		for _, s := range snap.Sections {
			w, ok := want[s.Section]
			if !ok {
				t.Errorf("unexpected section %v", s.Section)
				continue
			}
			if got := bodyOf(s); got != w {
				t.Errorf("section %v carries %T %v, want the %T given", s.Section, got, got, w)
			}
			if !bytes.Equal(s.Hash, Hash(w)) || !bytes.Equal(hashes[s.Section], s.Hash) {
				t.Errorf("section %v: hash %x, Hashes() %x, want %x", s.Section, s.Hash, hashes[s.Section], Hash(w))
			}
		}
		if len(hashes) != len(want) {
			t.Errorf("Hashes() has %d entries, want %d", len(hashes), len(want))
		}
	}

	t.Run("all", func(t *testing.T) {
		check(t, NewSnapshot(sys, hw, nw, sw, us, ag), map[agentproto.Section]proto.Message{
			agentproto.Section_SECTION_SYSTEM: sys, agentproto.Section_SECTION_HARDWARE: hw, agentproto.Section_SECTION_NETWORK: nw,
			agentproto.Section_SECTION_SOFTWARE: sw, agentproto.Section_SECTION_USERS: us, agentproto.Section_SECTION_AGENT: ag,
		})
	})
	t.Run("some nil", func(t *testing.T) {
		check(t, NewSnapshot(nil, hw, nil, sw, nil, ag), map[agentproto.Section]proto.Message{
			agentproto.Section_SECTION_HARDWARE: hw, agentproto.Section_SECTION_SOFTWARE: sw, agentproto.Section_SECTION_AGENT: ag,
		})
	})
	t.Run("none", func(t *testing.T) {
		check(t, NewSnapshot(nil, nil, nil, nil, nil, nil), map[agentproto.Section]proto.Message{})
	})
}

// ---- collector -------------------------------------------------------------------

func TestCollect_LinuxSmoke(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("collector only on Linux so far")
	}
	c, err := NewCollector(Options{AgentVersion: "1.2.3", Instance: "blue", Fingerprint: "00112233445566778899aabbccddeeff", StartedUnix: 1700000000})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[agentproto.Section]*agentproto.InventorySection{}
	for _, s := range snap.Sections {
		got[s.Section] = s
	}
	for _, sec := range []agentproto.Section{agentproto.Section_SECTION_SYSTEM, agentproto.Section_SECTION_HARDWARE, agentproto.Section_SECTION_NETWORK,
		agentproto.Section_SECTION_SOFTWARE, agentproto.Section_SECTION_USERS, agentproto.Section_SECTION_AGENT} {
		if got[sec] == nil {
			t.Errorf("section %v missing", sec)
		}
	}
	if len(snap.Sections) != 6 {
		t.Errorf("%d sections, want 6", len(snap.Sections))
	}
	sys := got[agentproto.Section_SECTION_SYSTEM].GetSystem()
	if sys.GetOsFamily() != "linux" || sys.GetArchitecture() != runtime.GOARCH || sys.GetOsName() == "" {
		t.Errorf("system = %v", sys)
	}
	ag := got[agentproto.Section_SECTION_AGENT].GetAgent()
	if ag.GetVersion() != "1.2.3" || ag.GetInstance() != "blue" || ag.GetStartedUnix() != 1700000000 || ag.GetCapabilityVersion() != agentproto.CapabilityVersion {
		t.Errorf("agent = %v", ag)
	}
	if hw := got[agentproto.Section_SECTION_HARDWARE].GetHardware(); hw.GetCpuCores() == 0 {
		t.Errorf("hardware = %v, want cores", hw)
	}
	// Everything collected can be marshalled (valid UTF-8 throughout).
	for _, s := range snap.Sections {
		if _, err := proto.Marshal(s); err != nil {
			t.Errorf("section %v does not marshal: %v", s.Section, err)
		}
	}
}

func TestCollect_ReadsFilesUnderRoot(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("collector only on Linux so far")
	}
	root := t.TempDir()
	files := map[string][]byte{
		"etc/os-release":              []byte("NAME=\"Testix\"\nVERSION_ID=\"7.1\"\n"),
		"var/lib/dpkg/status":         []byte(dpkgStatus),
		"proc/cpuinfo":                []byte(cpuinfoX86),
		"proc/meminfo":                []byte("MemTotal: 1024 kB\n"),
		"proc/stat":                   []byte("btime 1700000000\n"),
		"proc/mounts":                 []byte("/dev/vda1 / ext4 rw 0 0\n"),
		"run/utmp":                    utmpFile(t, utmp(utmpUserProcess, "alice", "pts/0", "", 5)),
		"etc/timezone":                []byte("Europe/Berlin\n"),
		"sys/class/dmi/id/sys_vendor": []byte("ACME\n"),
	}
	for name, b := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewCollector(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var sys *agentproto.SystemInfo
	var hw *agentproto.HardwareInfo
	var sw *agentproto.SoftwareInfo
	var us *agentproto.UsersInfo
	for _, s := range snap.Sections {
		switch s.Section {
		case agentproto.Section_SECTION_SYSTEM:
			sys = s.GetSystem()
		case agentproto.Section_SECTION_HARDWARE:
			hw = s.GetHardware()
		case agentproto.Section_SECTION_SOFTWARE:
			sw = s.GetSoftware()
		case agentproto.Section_SECTION_USERS:
			us = s.GetUsers()
		}
	}
	if sys.GetOsName() != "Testix" || sys.GetOsVersion() != "7.1" || sys.GetBootTimeUnix() != 1700000000 || sys.GetTimezone() != "Europe/Berlin" {
		t.Errorf("system = %v", sys)
	}
	if hw.GetRamBytes() != 1024*1024 || hw.GetCpuModel() != "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz" || hw.GetVendor() != "ACME" ||
		len(hw.GetDisks()) != 1 || hw.GetDisks()[0].GetDevice() != "/dev/vda1" {
		t.Errorf("hardware = %v", hw)
	}
	if sw.GetSource() != "dpkg" || len(sw.GetPackages()) != 6 {
		t.Errorf("software = %v, want the 6 installed dpkg packages", sw)
	}
	if len(us.GetLoggedIn()) != 1 || us.GetLoggedIn()[0].GetName() != "alice" {
		t.Errorf("users = %v", us)
	}
}
