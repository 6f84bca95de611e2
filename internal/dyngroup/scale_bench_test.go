package dyngroup

// Scale benchmark of dynamic group evaluation (docs/benchmarks.md): 100
// dynamic groups over 20,000 computers in a real SQLite store with
// inventories shaped like the ones agents send.
//
//	MAMORI_BENCH_DYNGROUPS=1 go test -run '^$' -bench DynGroupsScale -benchtime=1x -count=3 ./internal/dyngroup
//
// or scripts/bench-dyngroups.sh, which prints medians and ratios. Without
// MAMORI_BENCH_DYNGROUPS=1 (and always with -short) the benchmark is
// skipped, so the dataset is never built by `make test`.
//
// The dataset (static groups, enrolled computers, inventory, tags,
// presence, the 100 groups and their settled memberships) is built once,
// with synchronous=NORMAL so that seeding is fast, into a cache directory
// (MAMORI_BENCH_DYNGROUPS_DIR, default $TMPDIR/mamori-bench-dyngroups)
// and reused while its stamp matches. Every run of the benchmark (each
// -count) works on a fresh copy opened as production opens it
// (synchronous=FULL, WAL).
//
// Scenarios (sub-benchmarks, in this order on the same copy):
//
//	one-group/software      one group's template changes: Evaluator.full
//	                        for it (what the Run loop does on Reevaluate);
//	                        its rules read the software section
//	one-group/no-inventory  the same for a group whose rules read only the
//	                        computer row (agent version)
//	all-100/direct          all 100 templates change: one full pass for
//	                        all of them (the Run loop's pass when every
//	                        Reevaluate is queued before it wakes)
//	incremental/direct      one computer's inventory changes (check-in
//	                        written, untimed): Evaluator.incremental
//	startup/run-loop        Evaluator.Run started: its first pass over
//	                        every group, until every group is applied
//	all-100/run-loop        with Run going, 100 x (UpdateDynamicGroup +
//	                        Reevaluate) back to back as the HTTP API does,
//	                        until every group was applied by a pass that
//	                        started after its update committed
//	incremental/run-loop    with Run going (1 s interval): from the
//	                        check-in until the computer's memberships in
//	                        all groups are the expected ones
//
// Metrics per operation: wall-ms, cpu-ms (process user+sys from
// getrusage: the evaluator, SQLite, GC), heap-peak-MiB (sampled every
// 5 ms), alloc-MiB, rss-peak-MiB (VmHWM reset before each operation),
// rows-changed (membership rows added + removed), write-tx (ApplyMembership
// transactions, each a commit with fsync), events (server events written),
// passes (full or incremental evaluations started), read-MiB (inventory
// JSON read), db-read-ms / db-write-ms (time inside the store's evaluation
// reads and membership writes), io-write-MiB (bytes the process wrote:
// WAL frames and checkpoints).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/store"
)

const (
	scaleEnv          = "MAMORI_BENCH_DYNGROUPS"
	scaleEnvDir       = "MAMORI_BENCH_DYNGROUPS_DIR"
	scaleEnvComputers = "MAMORI_BENCH_DYNGROUPS_COMPUTERS"
	// scaleDataVersion changes whenever the generator or the group specs
	// change, so that a cached dataset is rebuilt.
	scaleDataVersion = 1
)

// scaleT0 is "now" for the dataset and the evaluator (fixed, so that a
// cached dataset gives the same memberships on any day).
var scaleT0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

var scaleNS = uuid.MustParse("6d616d6f-7269-4479-6e67-726f75707321")

// ---------------------------------------------------------------------------
// Fleet generator: a computer is a pure function of its index.

type scaleSite struct {
	name, prefix, tz string
	octet            int
}

var scaleSites = []scaleSite{
	{"Prague", "prg", "Europe/Prague", 10}, {"Berlin", "ber", "Europe/Berlin", 20},
	{"Lisbon", "lis", "Europe/Lisbon", 30}, {"Tokyo", "tyo", "Asia/Tokyo", 40},
}

type scaleRole struct {
	name, code string
	weight     int
}

// Four sites with four role groups each: 20 static groups.
var scaleRoles = []scaleRole{{"Workstations", "ws", 50}, {"Laptops", "nb", 25}, {"Servers", "srv", 15}, {"Lab", "lab", 10}}

const (
	roleWS = iota
	roleNB
	roleSrv
	roleLab
)

type scaleOS struct{ family, name, version, kernel, arch, source string }

var (
	osDebian12    = scaleOS{"linux", "Debian GNU/Linux", "12", "6.1.0-28-amd64", "amd64", "dpkg"}
	osDebian12ARM = scaleOS{"linux", "Debian GNU/Linux", "12", "6.1.0-28-arm64", "arm64", "dpkg"}
	osDebian11    = scaleOS{"linux", "Debian GNU/Linux", "11", "5.10.0-33-amd64", "amd64", "dpkg"}
	osUbuntu2404  = scaleOS{"linux", "Ubuntu", "24.04", "6.8.0-49-generic", "amd64", "dpkg"}
	osUbuntu2204  = scaleOS{"linux", "Ubuntu", "22.04", "5.15.0-126-generic", "amd64", "dpkg"}
	osRHEL95      = scaleOS{"linux", "Red Hat Enterprise Linux", "9.5", "5.14.0-503.el9.x86_64", "amd64", "rpm"}
	osRocky810    = scaleOS{"linux", "Rocky Linux", "8.10", "4.18.0-553.el8_10.x86_64", "amd64", "rpm"}
	osWin11x23    = scaleOS{"windows", "Windows 11 Pro", "23H2", "10.0.22631", "amd64", "msi"}
	osWin11x22    = scaleOS{"windows", "Windows 11 Pro", "22H2", "10.0.22621", "amd64", "msi"}
	osWin10       = scaleOS{"windows", "Windows 10 Enterprise", "22H2", "10.0.19045", "amd64", "msi"}
	osWinSrv      = scaleOS{"windows", "Windows Server 2022", "21H2", "10.0.20348", "amd64", "msi"}
	osMac14       = scaleOS{"darwin", "macOS", "14.7", "23.6.0", "arm64", "pkgutil"}
	osMac13       = scaleOS{"darwin", "macOS", "13.7", "22.6.0", "amd64", "pkgutil"}
)

type scaleWeighted[T any] struct {
	w int
	v T
}

func scalePick[T any](r *rand.Rand, ws []scaleWeighted[T]) T {
	total := 0
	for _, w := range ws {
		total += w.w
	}
	n := r.IntN(total)
	for _, w := range ws {
		if n < w.w {
			return w.v
		}
		n -= w.w
	}
	return ws[len(ws)-1].v
}

var scaleOSByRole = [][]scaleWeighted[scaleOS]{
	roleWS:  {{30, osWin11x23}, {15, osWin11x22}, {10, osWin10}, {15, osUbuntu2404}, {5, osUbuntu2204}, {8, osDebian12}, {12, osMac14}, {5, osMac13}},
	roleNB:  {{35, osWin11x23}, {10, osWin11x22}, {35, osMac14}, {5, osMac13}, {15, osUbuntu2404}},
	roleSrv: {{35, osDebian12}, {10, osDebian11}, {15, osUbuntu2204}, {10, osUbuntu2404}, {10, osRHEL95}, {5, osRocky810}, {15, osWinSrv}},
	roleLab: {{25, osDebian12}, {20, osDebian12ARM}, {20, osUbuntu2404}, {15, osWin11x23}, {10, osMac14}, {10, osRocky810}},
}

// Package vocabulary: ~100 base packages every computer has, the packages
// the templates name (with per-role prevalence and real-looking versions),
// and generated names up to 2,000, drawn with a Zipf distribution.
var scaleBase = strings.Fields(`adduser apt base-files base-passwd bash bsdutils ca-certificates coreutils cron curl dash dbus debconf
	debianutils diffutils dmidecode dpkg e2fsprogs findutils gawk gcc-12-base gnupg gpgv grep gzip hostname init-system-helpers
	iproute2 iputils-ping isc-dhcp-client kmod less libacl1 libapparmor1 libattr1 libaudit1 libblkid1 libbz2-1.0 libc-bin libc6
	libcap2 libcom-err2 libcrypt1 libcurl4 libdb5.3 libexpat1 libffi8 libgcc-s1 libgcrypt20 libgmp10 libgnutls30 libgpg-error0
	libgssapi-krb5-2 libhogweed6 libidn2-0 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0 liblz4-1 liblzma5
	libmount1 libncursesw6 libnettle8 libnghttp2-14 libp11-kit0 libpam-modules libpam-runtime libpam0g libpcre2-8-0 libpsl5
	libreadline8 librtmp1 libsasl2-2 libselinux1 libsemanage2 libsmartcols1 libsqlite3-0 libssh2-1 libssl3 libstdc++6
	libsystemd0 libtasn1-6 libtinfo6 libudev1 libunistring2 libuuid1 libxml2 libzstd1 login logrotate mount nano netbase openssl
	passwd perl perl-base procps python3 python3-minimal readline-common rsyslog sed sensible-utils sudo systemd systemd-sysv
	tar tzdata udev util-linux wget xz-utils zlib1g zstd`)

type scaleTarget struct {
	name     string
	prob     [4]int // percent, per role
	versions []scaleWeighted[string]
}

var scaleTargets = []scaleTarget{
	{"openssh-server", [4]int{30, 20, 90, 70}, []scaleWeighted[string]{{55, "9.2p1-2+deb12u3"}, {20, "9.2p1-2+deb12u2"}, {15, "9.6p1-3ubuntu13.5"}, {10, "8.4p1-5+deb11u3"}}},
	{"openssh-client", [4]int{80, 80, 95, 90}, []scaleWeighted[string]{{60, "9.2p1-2+deb12u3"}, {25, "9.6p1-3ubuntu13.5"}, {15, "8.4p1-5+deb11u3"}}},
	{"dropbear", [4]int{0, 0, 2, 5}, []scaleWeighted[string]{{1, "2022.83-1+deb12u1"}}},
	{"nginx", [4]int{2, 1, 30, 15}, []scaleWeighted[string]{{40, "1.22.1-9"}, {35, "1.24.0-2ubuntu7.1"}, {25, "1.26.2-1"}}},
	{"apache2", [4]int{1, 0, 15, 10}, []scaleWeighted[string]{{1, "2.4.62-1~deb12u2"}}},
	{"postgresql-15", [4]int{1, 0, 12, 8}, []scaleWeighted[string]{{70, "15.8-0+deb12u1"}, {30, "15.10-0+deb12u1"}}},
	{"mariadb-server", [4]int{0, 0, 8, 5}, []scaleWeighted[string]{{1, "1:10.11.6-0+deb12u1"}}},
	{"redis-server", [4]int{0, 0, 10, 10}, []scaleWeighted[string]{{1, "5:7.0.15-1~deb12u1"}}},
	{"docker-ce", [4]int{5, 3, 20, 40}, []scaleWeighted[string]{{60, "5:27.3.1-1~debian.12~bookworm"}, {40, "5:26.1.4-1~debian.12~bookworm"}}},
	{"containerd.io", [4]int{5, 3, 22, 40}, []scaleWeighted[string]{{1, "1.7.22-1"}}},
	{"auditd", [4]int{20, 10, 55, 30}, []scaleWeighted[string]{{1, "1:3.0.9-1"}}},
	{"osquery", [4]int{10, 10, 20, 10}, []scaleWeighted[string]{{1, "5.13.1-1.linux"}}},
	{"fail2ban", [4]int{0, 0, 40, 10}, []scaleWeighted[string]{{1, "1.0.2-2"}}},
	{"firefox", [4]int{45, 50, 0, 30}, []scaleWeighted[string]{{20, "115.16.0esr"}, {30, "128.4.0"}, {30, "131.0.3"}, {20, "132.0"}}},
	{"firefox-esr", [4]int{15, 5, 5, 10}, []scaleWeighted[string]{{1, "128.4.0esr-1~deb12u1"}}},
	{"google-chrome-stable", [4]int{45, 55, 0, 20}, []scaleWeighted[string]{{25, "129.0.6668.89-1"}, {40, "130.0.6723.116-1"}, {35, "131.0.6778.69-1"}}},
	{"chromium", [4]int{5, 5, 0, 15}, []scaleWeighted[string]{{1, "130.0.6723.116-1~deb12u1"}}},
	{"zoom", [4]int{35, 60, 0, 5}, []scaleWeighted[string]{{30, "5.17.11.3835"}, {45, "6.2.5.2440"}, {25, "6.3.0.5527"}}},
	{"slack-desktop", [4]int{30, 45, 0, 5}, []scaleWeighted[string]{{1, "4.41.97"}}},
	{"code", [4]int{20, 25, 2, 40}, []scaleWeighted[string]{{1, "1.95.3-1731513102"}}},
	{"git", [4]int{30, 30, 60, 80}, []scaleWeighted[string]{{1, "1:2.39.5-0+deb12u1"}}},
	{"nodejs", [4]int{10, 10, 15, 30}, []scaleWeighted[string]{{30, "18.19.0+dfsg-6~deb12u2"}, {40, "20.18.0-1nodesource1"}, {30, "22.11.0-1nodesource1"}}},
	{"golang-go", [4]int{5, 5, 5, 25}, []scaleWeighted[string]{{1, "2:1.19~1"}}},
	{"openjdk-17-jre", [4]int{10, 5, 20, 20}, []scaleWeighted[string]{{1, "17.0.13+11-2~deb12u1"}}},
	{"openjdk-11-jre", [4]int{3, 2, 10, 10}, []scaleWeighted[string]{{1, "11.0.25+9-1~deb11u1"}}},
	{"zabbix-agent", [4]int{10, 0, 60, 20}, []scaleWeighted[string]{{1, "1:6.0.14+dfsg-1+b1"}}},
	{"prometheus-node-exporter", [4]int{0, 0, 35, 20}, []scaleWeighted[string]{{1, "1.5.0-1+b6"}}},
	{"bacula-client", [4]int{0, 0, 55, 5}, []scaleWeighted[string]{{1, "13.0.1-1"}}},
	{"restic", [4]int{2, 5, 15, 5}, []scaleWeighted[string]{{1, "0.14.0-1+b5"}}},
}

// openssl and libssl3 are base packages with explicit versions.
var scaleSSLVersions = []scaleWeighted[string]{{60, "3.0.15-1~deb12u1"}, {25, "3.0.13-1~deb12u1"}, {15, "3.0.11-1~deb12u2"}}

// scaleFillers are generated names (Debian-like), ranked by popularity.
var scaleFillers = func() []string {
	stems := []string{"lib", "python3-", "perl-", "golang-", "node-", "x11-", "gnome-", "kde-", "fonts-", "ruby-", "php-", "r-cran-", "texlive-", "qt5-", "gir1.2-"}
	words := []string{"ssl", "crypto", "xml", "json", "yaml", "curl", "zlib", "png", "jpeg", "tiff", "gtk", "glib", "dbus", "systemd", "pam", "krb5",
		"ldap", "sasl", "sqlite", "pq", "mysql", "uuid", "ffi", "gmp", "mpfr", "readline", "ncurses", "bz2", "lzma", "zstd", "pcre", "icu",
		"harfbuzz", "freetype", "cairo", "pango", "pixbuf", "atk", "wayland", "drm", "mesa", "vulkan", "alsa", "pulse", "udev", "usb",
		"bluetooth", "nm", "polkit", "selinux", "apparmor", "audit", "cap", "seccomp", "acl", "attr", "nettle", "gnutls", "p11", "tasn1"}
	var names []string
	for _, suffix := range []string{"", "-dev"} {
		for _, w := range words {
			for _, s := range stems {
				names = append(names, s+w+suffix)
			}
		}
	}
	n := 2000 - len(scaleBase) - len(scaleTargets)
	r := rand.New(rand.NewPCG(7, 11))
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names[:n]
}()

// scaleVersion is a package's current version; old ones lag a patch.
func scaleVersion(name string, old bool) string {
	h := sha256.Sum256([]byte(name))
	maj, minor, patch, rel := int(h[0]%9), int(h[1]%30), int(h[2]%40)+1, int(h[3]%5)+1
	if old {
		patch--
	}
	return fmt.Sprintf("%d.%d.%d-%d", maj, minor, patch, rel)
}

type scalePkg struct{ name, version string }

type scaleIface struct {
	name, mac string
	addrs     []string
	up, lo    bool
}

type scaleComputer struct {
	i          int
	id, name   string
	site, role int
	os         scaleOS
	agent      string
	instance   string
	fp         string
	cores      int
	ramGiB     uint64
	cpuModel   string
	vendor     string
	product    string
	ifaces     []scaleIface
	pkgs       []scalePkg
	users      []string
	tags       []string
	online     bool
	lastSeen   time.Time
	bootUnix   int64
	startUnix  int64
	diskGiB    uint64
	diskFreeGB uint64
}

func scaleComputerID(i int) string {
	return uuid.NewSHA1(scaleNS, []byte("computer-"+strconv.Itoa(i))).String()
}

// scaleGen builds computer i; variant > 0 is a later inventory of the same
// computer (nginx installed or removed, eth0 moved to another subnet).
func scaleGen(i, variant int) *scaleComputer {
	r := rand.New(rand.NewPCG(uint64(i), 0x64796e67726f7570))
	c := &scaleComputer{i: i, id: scaleComputerID(i)}
	c.site = r.IntN(len(scaleSites))
	c.role = scalePick(r, []scaleWeighted[int]{{scaleRoles[0].weight, 0}, {scaleRoles[1].weight, 1}, {scaleRoles[2].weight, 2}, {scaleRoles[3].weight, 3}})
	site := scaleSites[c.site]
	c.name = fmt.Sprintf("%s-%s-%05d", site.prefix, scaleRoles[c.role].code, i)
	c.os = scalePick(r, scaleOSByRole[c.role])
	c.agent = scalePick(r, []scaleWeighted[string]{{70, "1.4.2"}, {20, "1.4.1"}, {8, "1.3.9"}, {2, "1.2.0"}})
	c.instance = uuid.NewSHA1(scaleNS, []byte("instance-"+strconv.Itoa(i))).String()
	c.fp = hex.EncodeToString(uuid.NewSHA1(scaleNS, []byte("fp-"+strconv.Itoa(i))).NodeID()) + strconv.Itoa(i)
	switch c.role {
	case roleSrv:
		c.cores = []int{2, 4, 8, 16, 32, 64}[r.IntN(6)]
		c.ramGiB = []uint64{4, 8, 16, 32, 64, 128, 256}[r.IntN(7)]
		c.cpuModel, c.vendor, c.product = "Intel(R) Xeon(R) Silver 4314", "Dell Inc.", "PowerEdge R650"
	case roleLab:
		c.cores = []int{2, 4, 8, 16}[r.IntN(4)]
		c.ramGiB = []uint64{2, 4, 8, 16, 32}[r.IntN(5)]
		c.cpuModel, c.vendor, c.product = "AMD EPYC 7763", "QEMU", "Standard PC (Q35 + ICH9, 2009)"
	default:
		c.cores = []int{4, 8, 8, 12, 16}[r.IntN(5)]
		c.ramGiB = []uint64{8, 16, 16, 32}[r.IntN(4)]
		c.cpuModel, c.vendor, c.product = "Intel(R) Core(TM) i7-1265U", "LENOVO", "ThinkPad T14 Gen 3"
	}
	if c.os.family == "darwin" {
		c.cpuModel, c.vendor, c.product = "Apple M2", "Apple Inc.", "MacBookPro18,3"
	}
	c.diskGiB = []uint64{256, 512, 1024, 2048}[r.IntN(4)]
	c.diskFreeGB = uint64(r.IntN(int(c.diskGiB) / 2))
	c.bootUnix = scaleT0.Unix() - int64(r.IntN(30*86400))
	c.startUnix = c.bootUnix + 20

	// Network: loopback, the site/role LAN, extras by role.
	mac := func(oui string) string {
		return fmt.Sprintf("%s:%02x:%02x:%02x", oui, r.IntN(256), r.IntN(256), r.IntN(256))
	}
	oui := scalePick(r, []scaleWeighted[string]{{30, "3c:52:82"}, {30, "f8:75:a4"}, {20, "a4:83:e7"}, {20, "00:1b:21"}})
	switch {
	case c.role == roleSrv && r.IntN(100) < 40:
		oui = "00:50:56" // VMware
	case c.role == roleLab && r.IntN(100) < 50:
		oui = "52:54:00" // KVM
	}
	lanName := map[string]string{"linux": "eth0", "windows": "Ethernet", "darwin": "en0"}[c.os.family]
	subnet, host := r.IntN(64), 1+r.IntN(254)
	if variant%2 == 1 {
		subnet = 60 + (subnet+1)%4 // moved to the .60-.63 subnets (the servers' DMZ)
	}
	c.ifaces = append(c.ifaces,
		scaleIface{name: "lo", addrs: []string{"127.0.0.1/8", "::1/128"}, up: true, lo: true},
		scaleIface{name: lanName, mac: mac(oui), up: true, addrs: []string{
			fmt.Sprintf("10.%d.%d.%d/24", site.octet+c.role, subnet, host),
			fmt.Sprintf("fe80::%x:%x:%x/64", r.IntN(65536), r.IntN(65536), r.IntN(65536))}})
	if c.role == roleNB && r.IntN(100) < 50 {
		c.ifaces = append(c.ifaces, scaleIface{name: "wlan0", mac: mac("a4:83:e7"), up: true,
			addrs: []string{fmt.Sprintf("192.168.%d.%d/24", r.IntN(3), 2+r.IntN(250))}})
	}
	if c.role == roleSrv && r.IntN(100) < 30 {
		c.ifaces = append(c.ifaces, scaleIface{name: "eth1", mac: mac(oui), up: true,
			addrs: []string{fmt.Sprintf("172.16.%d.%d/24", c.site, 1+r.IntN(254))}})
	}
	if (c.role == roleSrv || c.role == roleLab) && c.os.family == "linux" && r.IntN(100) < 25 {
		c.ifaces = append(c.ifaces, scaleIface{name: "docker0", mac: mac("02:42:ac"), up: true, addrs: []string{"172.17.0.1/16"}})
	}

	// Software: base, targeted, then Zipf-ranked fillers up to 250-350.
	want := 250 + r.IntN(101)
	have := map[string]bool{}
	add := func(name, version string) {
		if !have[name] {
			have[name] = true
			c.pkgs = append(c.pkgs, scalePkg{name, version})
		}
	}
	ssl := scalePick(r, scaleSSLVersions)
	for _, n := range scaleBase {
		v := scaleVersion(n, r.IntN(100) < 12)
		if n == "openssl" || n == "libssl3" {
			v = ssl
		}
		add(n, v)
	}
	for _, t := range scaleTargets {
		if r.IntN(100) < t.prob[c.role] {
			add(t.name, scalePick(r, t.versions))
		}
	}
	if variant%2 == 1 {
		if have["nginx"] {
			c.pkgs = slices.DeleteFunc(c.pkgs, func(p scalePkg) bool { return p.name == "nginx" })
		} else {
			add("nginx", "1.26.2-1")
		}
	}
	z := rand.NewZipf(r, 1.05, 8, uint64(len(scaleFillers)-1))
	for tries := 0; len(c.pkgs) < want && tries < 20*want; tries++ {
		n := scaleFillers[z.Uint64()]
		add(n, scaleVersion(n, r.IntN(100) < 12))
	}
	slices.SortFunc(c.pkgs, func(a, b scalePkg) int { return strings.Compare(a.name, b.name) })

	// Users, tags, presence.
	if c.role != roleSrv && r.IntN(100) < 70 {
		c.users = append(c.users, fmt.Sprintf("user%04d", r.IntN(5000)))
	}
	if r.IntN(100) < 3 {
		c.users = append(c.users, []string{"administrator", "root"}[r.IntN(2)])
	}
	if r.IntN(100) < 30 {
		tags := []scaleWeighted[string]{{12, "vip"}, {6, "exec"}, {10, "pci"}, {6, "kiosk"}, {8, "legacy-app"}, {8, "legacy-os"}, {10, "canary"},
			{5, "canary-2"}, {10, "finance"}, {15, "dev"}, {10, "qa"}, {5, "dmz"}, {5, "backup-exempt"}}
		for range 1 + r.IntN(3) {
			t := scalePick(r, tags)
			if !slices.Contains(c.tags, t) {
				c.tags = append(c.tags, t)
			}
		}
	}
	c.online = r.IntN(100) < 65
	if c.online {
		c.lastSeen = scaleT0.Add(-time.Duration(r.IntN(300)) * time.Second)
	} else {
		c.lastSeen = scaleT0.Add(-time.Duration(r.ExpFloat64() * float64(5*24*time.Hour)))
	}
	return c
}

func scaleQuote(b []byte, s string) []byte { return strconv.AppendQuote(b, s) } // ASCII only here

// sections renders the inventory as the server stores it: protojson with
// proto names and unpopulated fields (64-bit integers as strings).
func (c *scaleComputer) sections() []store.InventorySection {
	site := scaleSites[c.site]
	var b []byte
	out := make([]store.InventorySection, 0, 6)
	emit := func(name string) {
		h := sha256.Sum256(b)
		out = append(out, store.InventorySection{Section: name, Hash: h[:], Data: string(b)})
		b = b[:0]
	}
	b = fmt.Appendf(b, `{"hostname":%q,"fqdn":%q,"os_family":%q,"os_name":%q,"os_version":%q,"kernel":%q,"architecture":%q,"boot_time_unix":"%d","timezone":%q}`,
		c.name, c.name+".corp.example", c.os.family, c.os.name, c.os.version, c.os.kernel, c.os.arch, c.bootUnix, site.tz)
	emit("system")
	b = fmt.Appendf(b, `{"cpu_model":%q,"cpu_cores":%d,"ram_bytes":"%d","disks":[{"device":"/dev/nvme0n1p2","mount_point":"/","filesystem":"ext4","size_bytes":"%d","free_gib":"%d"}],"vendor":%q,"product":%q,"serial":"SN%08d"}`,
		c.cpuModel, c.cores, c.ramGiB<<30, c.diskGiB<<30, c.diskFreeGB, c.vendor, c.product, c.i)
	emit("hardware")
	b = append(b, `{"interfaces":[`...)
	for k, f := range c.ifaces {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = scaleQuote(b, f.name)
		b = append(b, `,"mac":`...)
		b = scaleQuote(b, f.mac)
		b = append(b, `,"addresses":[`...)
		for j, a := range f.addrs {
			if j > 0 {
				b = append(b, ',')
			}
			b = scaleQuote(b, a)
		}
		b = fmt.Appendf(b, `],"up":%t,"loopback":%t}`, f.up, f.lo)
	}
	b = append(b, `]}`...)
	emit("network")
	b = append(b, `{"packages":[`...)
	for k, p := range c.pkgs {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = scaleQuote(b, p.name)
		b = append(b, `,"version":`...)
		b = scaleQuote(b, p.version)
		b = append(b, `,"architecture":`...)
		b = scaleQuote(b, c.os.arch)
		b = append(b, '}')
	}
	b = append(b, `],"source":`...)
	b = scaleQuote(b, c.os.source)
	b = append(b, '}')
	emit("software")
	b = append(b, `{"logged_in":[`...)
	for k, u := range c.users {
		if k > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"name":%q,"terminal":"tty2","host":"","since_unix":"%d"}`, u, c.bootUnix+3600)
	}
	b = append(b, `]}`...)
	emit("users")
	b = fmt.Appendf(b, `{"version":%q,"capability_version":%d,"instance":%q,"hardware_fingerprint":%q,"started_unix":"%d"}`,
		c.agent, agentproto.CapabilityVersion, c.instance, c.fp, c.startUnix)
	emit("agent")
	return out
}

func (c *scaleComputer) checkIn(now time.Time, only ...string) *store.CheckIn {
	ci := &store.CheckIn{ComputerID: c.id, Now: now,
		Summary: store.ComputerSummary{Hostname: c.name, OSName: c.os.name, OSVersion: c.os.version, AgentVersion: c.agent}}
	for _, s := range c.sections() {
		if len(only) == 0 || slices.Contains(only, s.Section) {
			ci.Sections = append(ci.Sections, s)
		}
	}
	return ci
}

// ---------------------------------------------------------------------------
// The 100 dynamic groups, each with the template it starts with (a) and
// the one it is changed to (b).

type scaleGroupSpec struct {
	name   string
	site   int    // static parent: -1 All, else that site's group
	parent string // dynamic parent's name
	a, b   string
}

func (s scaleGroupSpec) id() string { return uuid.NewSHA1(scaleNS, []byte("group-"+s.name)).String() }

func scaleRule(field string, op Operator, value string) Rule {
	return Rule{Field: field, Operator: op, Value: value}
}

func scaleTpl(op Op, rules ...Rule) string {
	b, err := json.Marshal(Template{Op: op, Rules: rules})
	if err != nil {
		panic(err)
	}
	if _, err := Parse(b); err != nil {
		panic(fmt.Sprintf("%s: %v", b, err))
	}
	return string(b)
}

const (
	scaleBaselineSoftware = "Vulnerable OpenSSL"
	scaleBaselineRowOnly  = "Outdated agents"
)

func scaleGroupSpecs() []scaleGroupSpec {
	var out []scaleGroupSpec
	g := func(name string, site int, parent string, a, b string) {
		out = append(out, scaleGroupSpec{name, site, parent, a, b})
	}
	sw := func(v string) Rule { return scaleRule("software", Eq, v) }
	for s, site := range scaleSites {
		n := func(x string) string { return site.name + ": " + x }
		lan := fmt.Sprintf("10.%d.0.0/16", site.octet)
		g(n("Linux"), s, "", scaleTpl(And, scaleRule("os.family", Eq, "linux")), scaleTpl(Or, scaleRule("os.family", Eq, "linux"), scaleRule("os.family", Eq, "darwin")))
		g(n("Old Windows 11"), s, "", scaleTpl(And, scaleRule("os.name", Contains, "Windows 11"), scaleRule("os.version", Lt, "23H2")),
			scaleTpl(And, scaleRule("os.name", Contains, "Windows 11"), scaleRule("os.version", Le, "23H2")))
		g(n("Low RAM"), s, "", scaleTpl(And, scaleRule("hardware.ram", Lt, "8G")), scaleTpl(And, scaleRule("hardware.ram", Lt, "16G")))
		g(n("nginx"), s, "", scaleTpl(And, sw("nginx")), scaleTpl(And, scaleRule("software", Lt, "nginx 1.24")))
		g(n("Office LAN"), s, "", scaleTpl(And, scaleRule("ip", InRange, lan)), scaleTpl(And, scaleRule("ip", InRange, fmt.Sprintf("10.%d.0.0/18", site.octet))))
		g(n("Servers by name"), s, "", scaleTpl(And, scaleRule("hostname", Prefix, site.prefix+"-srv")), scaleTpl(And, scaleRule("hostname", Prefix, site.prefix+"-srv-0")))
		g(n("Vulnerable OpenSSL"), s, "", scaleTpl(Or, scaleRule("software", Lt, "openssl 3.0.13"), scaleRule("software", Lt, "libssl3 3.0.13")),
			scaleTpl(Or, scaleRule("software", Lt, "openssl 3.0.14"), scaleRule("software", Lt, "libssl3 3.0.14")))
		g(n("No SSH"), s, "", scaleTpl(Nor, sw("openssh-server"), sw("dropbear")), scaleTpl(Nor, sw("openssh-server")))
		g(n("Linux without auditd"), -1, n("Linux"), scaleTpl(Nand, sw("auditd")), scaleTpl(Nand, sw("auditd"), sw("osquery")))
		g(n("Docker hosts"), -1, n("Linux"), scaleTpl(And, sw("docker-ce")), scaleTpl(Or, sw("docker-ce"), sw("containerd.io")))
		g(n("Big docker hosts"), -1, n("Docker hosts"), scaleTpl(And, scaleRule("hardware.ram", Ge, "32G")), scaleTpl(And, scaleRule("hardware.ram", Ge, "64G")))
	}
	const all = -1
	g("VIP", all, "", scaleTpl(And, scaleRule("tag", Eq, "vip")), scaleTpl(Or, scaleRule("tag", Eq, "vip"), scaleRule("tag", Eq, "exec")))
	g("PCI scope", all, "", scaleTpl(Or, scaleRule("tag", Eq, "pci"), scaleRule("ip", InRange, "10.20.8.0/21")), scaleTpl(Or, scaleRule("tag", Eq, "pci"), scaleRule("ip", InRange, "10.20.0.0/20")))
	g("Kiosks", all, "", scaleTpl(And, scaleRule("tag", Eq, "kiosk")), scaleTpl(And, scaleRule("tag", Eq, "kiosk"), scaleRule("os.family", Eq, "windows")))
	g("Legacy", all, "", scaleTpl(And, scaleRule("tag", Contains, "legacy")), scaleTpl(And, scaleRule("tag", Eq, "legacy-app")))
	g("Canary ring", all, "", scaleTpl(And, scaleRule("tag", Prefix, "canary")), scaleTpl(And, scaleRule("tag", Eq, "canary")))
	g("ARM", all, "", scaleTpl(And, scaleRule("architecture", Eq, "arm64")), scaleTpl(And, scaleRule("architecture", Eq, "arm64"), scaleRule("os.family", Eq, "linux")))
	g("Many cores", all, "", scaleTpl(And, scaleRule("hardware.cpu_cores", Ge, "16")), scaleTpl(And, scaleRule("hardware.cpu_cores", Ge, "32")))
	g("Low-end", all, "", scaleTpl(And, scaleRule("hardware.cpu_cores", Le, "4"), scaleRule("hardware.ram", Le, "8G")),
		scaleTpl(Or, scaleRule("hardware.cpu_cores", Le, "4"), scaleRule("hardware.ram", Le, "8G")))
	g("Go GLib bindings", all, "", scaleTpl(And, scaleRule("software.name", Prefix, "golang-gl")), scaleTpl(And, scaleRule("software.name", Prefix, "texlive-fr")))
	g("KDE Wayland", all, "", scaleTpl(And, scaleRule("software.name", Contains, "kde-wayland")), scaleTpl(And, scaleRule("software.name", Suffix, "-vulkan-dev")))
	g("Old Firefox", all, "", scaleTpl(And, scaleRule("software", Lt, "firefox 128")), scaleTpl(And, scaleRule("software", Lt, "firefox 131")))
	g("Chrome", all, "", scaleTpl(And, sw("google-chrome-stable")), scaleTpl(And, scaleRule("software", Lt, "google-chrome-stable 130")))
	g("Zoom", all, "", scaleTpl(And, sw("zoom")), scaleTpl(And, scaleRule("software", Ge, "zoom 6.0")))
	g("No browser", all, "", scaleTpl(Nor, sw("firefox"), sw("firefox-esr"), sw("google-chrome-stable"), sw("chromium")),
		scaleTpl(Nor, sw("firefox"), sw("google-chrome-stable")))
	g("VMware VMs", all, "", scaleTpl(And, scaleRule("mac", Prefix, "00:50:56")), scaleTpl(Or, scaleRule("mac", Prefix, "00:50:56"), scaleRule("mac", Prefix, "52:54:00")))
	g("Debian 11", all, "", scaleTpl(And, scaleRule("os.name", Eq, "Debian GNU/Linux"), scaleRule("os.version", Lt, "12")),
		scaleTpl(And, scaleRule("os.name", Eq, "Debian GNU/Linux"), scaleRule("os.version", Le, "12")))
	g("Old Ubuntu", all, "", scaleTpl(And, scaleRule("os.name", Eq, "Ubuntu"), scaleRule("os.version", Lt, "24.04")), scaleTpl(And, scaleRule("os.name", Eq, "Ubuntu")))
	g("RHEL family", all, "", scaleTpl(Or, scaleRule("os.name", Prefix, "Red Hat"), scaleRule("os.name", Prefix, "Rocky")), scaleTpl(And, scaleRule("os.name", Prefix, "Red Hat")))
	g("Old macOS", all, "", scaleTpl(And, scaleRule("os.family", Eq, "darwin"), scaleRule("os.version", Lt, "14")),
		scaleTpl(And, scaleRule("os.family", Eq, "darwin"), scaleRule("os.version", Lt, "14.5")))
	g("Windows Server", all, "", scaleTpl(And, scaleRule("os.name", Contains, "Server")), scaleTpl(And, scaleRule("os.name", Contains, "Server"), scaleRule("hostname", Contains, "-srv-")))
	g("Windows 10", all, "", scaleTpl(And, scaleRule("os.name", Contains, "Windows 10")), scaleTpl(And, scaleRule("os.name", Prefix, "Windows 1")))
	g(scaleBaselineRowOnly, all, "", scaleTpl(And, scaleRule("agent.version", Lt, "1.4.2")), scaleTpl(And, scaleRule("agent.version", Lt, "1.4.1")))
	g("Admin sessions", all, "", scaleTpl(And, scaleRule("logged_in_user", Eq, "administrator")),
		scaleTpl(Or, scaleRule("logged_in_user", Eq, "administrator"), scaleRule("logged_in_user", Eq, "root")))
	g("Not seen for a week", all, "", scaleTpl(And, scaleRule("last_seen.age", Gt, "7d")), scaleTpl(And, scaleRule("last_seen.age", Gt, "3d")))
	g("Online servers", all, "", scaleTpl(And, scaleRule("status", Eq, "online"), scaleRule("hostname", Contains, "-srv-")),
		scaleTpl(And, scaleRule("status", Eq, "online"), scaleRule("hostname", Contains, "-srv-"), scaleRule("os.family", Eq, "linux")))
	g("Unresolved detections", all, "", scaleTpl(And, scaleRule("detections.unresolved", Gt, "0")), scaleTpl(And, scaleRule("detections.unresolved", Gt, "1")))
	g("Clones", all, "", scaleTpl(And, scaleRule("clone_suspected", Eq, "true")), scaleTpl(And, scaleRule("clone_suspected", Eq, "true"), scaleRule("status", Eq, "online")))
	g(scaleBaselineSoftware, all, "", scaleTpl(Or, scaleRule("software", Lt, "openssl 3.0.13"), scaleRule("software", Lt, "libssl3 3.0.13")),
		scaleTpl(Or, scaleRule("software", Lt, "openssl 3.0.14"), scaleRule("software", Lt, "libssl3 3.0.14")))
	g("SSH servers", all, "", scaleTpl(And, sw("openssh-server")), scaleTpl(And, scaleRule("software", Lt, "openssh-server 9.6")))
	g("Web servers", all, "", scaleTpl(Or, sw("nginx"), sw("apache2")), scaleTpl(And, sw("nginx")))
	g("Databases", all, "", scaleTpl(Or, sw("postgresql-15"), sw("mariadb-server")), scaleTpl(Or, sw("postgresql-15"), sw("mariadb-server"), sw("redis-server")))
	g("No monitoring", all, "", scaleTpl(Nor, sw("zabbix-agent"), sw("prometheus-node-exporter")), scaleTpl(Nor, sw("zabbix-agent")))
	g("Java", all, "", scaleTpl(And, sw("openjdk-17-jre")), scaleTpl(Or, sw("openjdk-17-jre"), sw("openjdk-11-jre")))
	g("Developers", all, "", scaleTpl(And, sw("git"), sw("code")), scaleTpl(Or, sw("git"), sw("code")))
	g("Hardened", all, "", scaleTpl(And, sw("fail2ban"), sw("auditd"), scaleRule("os.family", Eq, "linux")), scaleTpl(And, sw("auditd"), scaleRule("os.family", Eq, "linux")))
	g("Servers", all, "", scaleTpl(And, scaleRule("hostname", Contains, "-srv-")), scaleTpl(Or, scaleRule("hostname", Contains, "-srv-"), scaleRule("hostname", Contains, "-lab-")))
	g("Servers with nginx", all, "Servers", scaleTpl(And, sw("nginx")), scaleTpl(And, scaleRule("software", Lt, "nginx 1.24")))
	g("nginx on VMs", all, "Servers with nginx", scaleTpl(And, scaleRule("mac", Prefix, "00:50:56")),
		scaleTpl(Or, scaleRule("mac", Prefix, "00:50:56"), scaleRule("mac", Prefix, "52:54:00")))
	g("Servers without backup", all, "Servers", scaleTpl(Nor, sw("bacula-client")), scaleTpl(Nor, sw("bacula-client"), sw("restic")))
	g("Servers in DMZ", all, "Servers", scaleTpl(And, scaleRule("ip", InRange, "10.12.60.0-10.12.63.255")), scaleTpl(And, scaleRule("ip", InRange, "10.12.56.0/21")))
	g("Big servers", all, "Servers", scaleTpl(And, scaleRule("hardware.ram", Ge, "128G")), scaleTpl(And, scaleRule("hardware.ram", Ge, "64G")))
	g("Home office", all, "", scaleTpl(And, scaleRule("ip", InRange, "192.168.0.0/16")), scaleTpl(And, scaleRule("ip", Prefix, "192.168.1.")))
	g("Docker bridge", all, "", scaleTpl(And, scaleRule("ip", InRange, "172.17.0.0/16")), scaleTpl(Or, scaleRule("ip", InRange, "172.17.0.0/16"), sw("docker-ce")))
	g("Backup network", all, "", scaleTpl(And, scaleRule("ip", InRange, "172.16.0.0/12")), scaleTpl(And, scaleRule("ip", InRange, "172.16.0.0/16")))
	g("Link-local Macs", all, "", scaleTpl(And, scaleRule("ip", InRange, "fe80::/10"), scaleRule("os.family", Eq, "darwin")),
		scaleTpl(And, scaleRule("ip", InRange, "fe80::/10"), scaleRule("os.family", Eq, "windows")))
	g("Tokyo by name", all, "", scaleTpl(And, scaleRule("hostname", Prefix, "tyo-")), scaleTpl(And, scaleRule("hostname", Suffix, "7")))
	g("Workstations 0xxxx", all, "", scaleTpl(And, scaleRule("hostname", Contains, "-ws-0")), scaleTpl(And, scaleRule("hostname", Contains, "-ws-1")))
	g("Big laptops", all, "", scaleTpl(And, scaleRule("hostname", Contains, "-nb-"), scaleRule("hardware.ram", Ge, "32G")),
		scaleTpl(And, scaleRule("hostname", Contains, "-nb-"), scaleRule("hardware.ram", Ge, "16G")))
	g("Node.js", all, "", scaleTpl(And, sw("nodejs")), scaleTpl(And, scaleRule("software", Ge, "nodejs 20")))
	g("Go toolchain", all, "", scaleTpl(And, sw("golang-go")), scaleTpl(Or, sw("golang-go"), sw("nodejs")))
	g("Not fully patched", all, "", scaleTpl(Nand, scaleRule("software", Ge, "openssl 3.0.15"), scaleRule("software", Ge, "openssh-server 9.2p1-2+deb12u3")),
		scaleTpl(Nand, scaleRule("software", Ge, "openssl 3.0.15")))
	f := scaleFillers
	g("Popular library", all, "", scaleTpl(And, sw(f[5])), scaleTpl(And, sw(f[50])))
	g("Uncommon library", all, "", scaleTpl(And, sw(f[300])), scaleTpl(And, sw(f[600])))
	g("Rare libraries", all, "", scaleTpl(Or, sw(f[1200]), sw(f[1500])), scaleTpl(Or, sw(f[1200])))
	g("Missing library", all, "", scaleTpl(Nor, sw(f[20])), scaleTpl(Nor, sw(f[40])))
	g("Old curl", all, "", scaleTpl(And, scaleRule("software", Lt, "curl "+scaleVersion("curl", false))),
		scaleTpl(And, scaleRule("software", Lt, "tar "+scaleVersion("tar", false))))
	return out
}

// ---------------------------------------------------------------------------
// Dataset: built once into the cache directory.

func scaleComputers() int {
	if v, err := strconv.Atoi(os.Getenv(scaleEnvComputers)); err == nil && v > 0 {
		return v
	}
	return 20000
}

func scaleSkip(b *testing.B) {
	if testing.Short() {
		b.Skip("scale benchmark: not in -short")
	}
	if os.Getenv(scaleEnv) != "1" {
		b.Skip("scale benchmark: set " + scaleEnv + "=1 (see scripts/bench-dyngroups.sh)")
	}
}

var (
	scaleGoldenOnce sync.Once
	scaleGoldenPath string
	scaleGoldenErr  error
)

// scaleGolden returns the path of the cached dataset, building it if the
// cache is missing or stale.
func scaleGolden(b *testing.B) string {
	scaleGoldenOnce.Do(func() {
		n := scaleComputers()
		dir := os.Getenv(scaleEnvDir)
		if dir == "" {
			dir = filepath.Join(os.TempDir(), "mamori-bench-dyngroups")
		}
		dir = filepath.Join(dir, fmt.Sprintf("dataset-v%d-n%d", scaleDataVersion, n))
		stamp := filepath.Join(dir, "complete")
		scaleGoldenPath = filepath.Join(dir, store.FileName)
		if _, err := os.Stat(stamp); err == nil {
			b.Logf("using the cached dataset %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			scaleGoldenErr = err
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			scaleGoldenErr = err
			return
		}
		start := time.Now()
		if scaleGoldenErr = scaleBuild(b, dir, n); scaleGoldenErr != nil {
			return
		}
		scaleGoldenErr = os.WriteFile(stamp, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644)
		fi, _ := os.Stat(scaleGoldenPath)
		var size int64
		if fi != nil {
			size = fi.Size()
		}
		b.Logf("built the dataset (%d computers, %d MiB) in %s into %s", n, size>>20, time.Since(start).Round(time.Second), dir)
	})
	if scaleGoldenErr != nil {
		b.Fatal(scaleGoldenErr)
	}
	return scaleGoldenPath
}

func scaleBuild(b *testing.B, dir string, n int) error {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, dir, store.Options{Synchronous: "NORMAL"})
	if err != nil {
		return err
	}
	defer db.Close()
	t := time.Now()
	siteIDs := make([]string, len(scaleSites))
	secrets := make([][]string, len(scaleSites))
	for s, site := range scaleSites {
		sg, err := db.CreateGroup(ctx, store.GroupAll, site.name)
		if err != nil {
			return err
		}
		siteIDs[s] = sg.ID
		for _, role := range scaleRoles {
			rg, err := db.CreateGroup(ctx, sg.ID, role.name)
			if err != nil {
				return err
			}
			secret := "bench-" + rg.ID
			if err := db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{ID: uuid.NewString(), SecretHash: secret, GroupID: rg.ID,
				ExpiresAt: scaleT0.AddDate(1, 0, 0), CreatedBy: "bench", CreatedAt: scaleT0.AddDate(0, -6, 0)}); err != nil {
				return err
			}
			secrets[s] = append(secrets[s], secret)
		}
	}
	enrolled := scaleT0.AddDate(0, -3, 0)
	var batch []*store.CheckIn
	var presence []store.PresenceUpdate
	flush := func() error {
		if _, err := db.ApplyCheckIns(ctx, batch); err != nil {
			return err
		}
		if err := db.ApplyPresence(ctx, presence); err != nil {
			return err
		}
		batch, presence = batch[:0], presence[:0]
		return nil
	}
	var sectionBytes int64
	for i := range n {
		c := scaleGen(i, 0)
		if err := db.EnrollComputer(ctx, secrets[c.site][c.role], enrolled,
			&store.Computer{ID: c.id, Name: c.name, Hostname: c.name, Instance: c.instance, HardwareFingerprint: c.fp,
				Platform: c.os.family, AgentVersion: c.agent},
			&store.AgentCertificate{Serial: uuid.NewSHA1(scaleNS, []byte("cert-"+c.id)).String(), ComputerID: c.id,
				IssuedAt: enrolled, NotAfter: enrolled.AddDate(1, 0, 0)}); err != nil {
			return fmt.Errorf("enrolling %s: %w", c.name, err)
		}
		for _, tag := range c.tags {
			if err := db.AddTag(ctx, c.id, tag); err != nil {
				return err
			}
		}
		ci := c.checkIn(scaleT0.Add(-time.Hour))
		for _, s := range ci.Sections {
			sectionBytes += int64(len(s.Data))
		}
		batch = append(batch, ci)
		u := store.PresenceUpdate{ComputerID: c.id, LastSeen: c.lastSeen}
		if c.online {
			u.Status, u.ConnectedSince = store.StatusOnline, c.lastSeen.Add(-time.Hour)
		}
		presence = append(presence, u)
		if len(batch) == 250 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	b.Logf("seeded %d computers (%d MiB of inventory JSON) in %s", n, sectionBytes>>20, time.Since(t).Round(time.Millisecond))
	t = time.Now()
	for _, s := range scaleGroupSpecs() {
		g := &store.DynamicGroup{ID: s.id(), Name: s.name, Template: s.a}
		switch {
		case s.parent != "":
			g.DynamicParentID = scaleGroupSpec{name: s.parent}.id()
		case s.site >= 0:
			g.StaticParentID = siteIDs[s.site]
		default:
			g.StaticParentID = store.GroupAll
		}
		if err := db.CreateDynamicGroup(ctx, g); err != nil {
			return fmt.Errorf("group %q: %w", s.name, err)
		}
	}
	ev := &Evaluator{Store: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return scaleT0 }}
	ev.init()
	if err := ev.full(ctx, nil); err != nil {
		return err
	}
	b.Logf("first evaluation of %d groups in %s", len(scaleGroupSpecs()), time.Since(t).Round(time.Millisecond))
	return nil
}

func scaleCopyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ---------------------------------------------------------------------------
// Instrumentation.

// scaleCountingStore counts what the evaluator reads and writes, and which
// pass applied each group.
type scaleCountingStore struct {
	*store.DB
	mu           sync.Mutex
	passes       int
	passStart    time.Time
	applied      map[string]time.Time // group -> start of the pass that last applied it
	applyTx      int
	rowsChanged  int
	rowsRead     int
	sectionBytes int64
}

func (s *scaleCountingStore) DynamicGroupDefinitions(ctx context.Context) ([]*store.DynamicGroup, error) {
	s.mu.Lock()
	s.passes++
	s.passStart = time.Now()
	s.mu.Unlock()
	return s.DB.DynamicGroupDefinitions(ctx)
}

func (s *scaleCountingStore) ComputersForEvaluation(ctx context.Context, afterID string, limit int, ids []string, sections []string) ([]store.EvalRow, error) {
	rows, err := s.DB.ComputersForEvaluation(ctx, afterID, limit, ids, sections)
	var n int64
	for _, r := range rows {
		for _, d := range r.Sections {
			n += int64(len(d))
		}
	}
	s.mu.Lock()
	s.rowsRead += len(rows)
	s.sectionBytes += n
	s.mu.Unlock()
	return rows, err
}

func (s *scaleCountingStore) ApplyMembership(ctx context.Context, groupID string, added, removed []string, now time.Time) error {
	err := s.DB.ApplyMembership(ctx, groupID, added, removed, now)
	s.mu.Lock()
	s.applyTx++
	s.rowsChanged += len(added) + len(removed)
	if err == nil {
		s.applied[groupID] = s.passStart
	}
	s.mu.Unlock()
	return err
}

// appliedAfter reports whether every group was applied by a pass that
// started after since[group].
func (s *scaleCountingStore) appliedAfter(since map[string]time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for g, t := range since {
		if !s.applied[g].After(t) {
			return false
		}
	}
	return true
}

// scaleOpTimes sums the store's operation times (store.Options.Observer).
type scaleOpTimes struct {
	mu sync.Mutex
	d  map[string]time.Duration
}

func (o *scaleOpTimes) observe(op string, d time.Duration, _ error) {
	o.mu.Lock()
	o.d[op] += d
	o.mu.Unlock()
}

func (o *scaleOpTimes) take() map[string]time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := o.d
	o.d = map[string]time.Duration{}
	return d
}

// scaleResult is what one operation cost.
type scaleResult struct {
	wall, cpu       time.Duration
	heapPeak, alloc uint64
	rssPeak         uint64
	gcs             uint64
	rowsChanged     int
	applyTx, passes int
	events          int64
	rowsRead        int
	sectionBytes    int64
	dbRead, dbWrite time.Duration
	ioWrite         uint64                   // bytes the process wrote through write syscalls (WAL, checkpoints)
	ops             map[string]time.Duration // store operation -> time spent in it
}

type scaleMeter struct {
	s            *scaleCountingStore
	ops          *scaleOpTimes
	start        time.Time
	ru           syscall.Rusage
	allocs, gcs  uint64
	events       int64
	wchar        uint64
	stop, done   chan struct{}
	peak         uint64
	rssResetable bool
}

var scaleHeapMetric = "/memory/classes/heap/objects:bytes"

func scaleReadMetrics(names ...string) []uint64 {
	ss := make([]metrics.Sample, len(names))
	for i, n := range names {
		ss[i].Name = n
	}
	metrics.Read(ss)
	out := make([]uint64, len(names))
	for i, s := range ss {
		if s.Value.Kind() == metrics.KindUint64 {
			out[i] = s.Value.Uint64()
		}
	}
	return out
}

func scaleCPUTime(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func scaleVmHWM() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// scaleWchar is the bytes the process has written through write syscalls
// (Linux /proc/self/io), 0 where unknown.
func scaleWchar() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func scaleStartMeter(b *testing.B, s *scaleCountingStore, ops *scaleOpTimes) *scaleMeter {
	runtime.GC()
	m := &scaleMeter{s: s, ops: ops, stop: make(chan struct{}), done: make(chan struct{})}
	// Writing 5 resets the peak RSS (Linux); without it rss-peak is the
	// process's peak so far.
	m.rssResetable = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	seq, err := s.ServerEventSeq(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	m.events = seq
	s.mu.Lock()
	s.passes, s.applyTx, s.rowsChanged, s.rowsRead, s.sectionBytes = 0, 0, 0, 0, 0
	s.mu.Unlock()
	ops.take()
	v := scaleReadMetrics("/gc/heap/allocs:bytes", "/gc/cycles/total:gc-cycles", scaleHeapMetric)
	m.allocs, m.gcs, m.peak = v[0], v[1], v[2]
	go func() {
		defer close(m.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.peak = max(m.peak, scaleReadMetrics(scaleHeapMetric)[0])
			}
		}
	}()
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &m.ru); err != nil {
		b.Fatal(err)
	}
	m.wchar = scaleWchar()
	m.start = time.Now()
	return m
}

func (m *scaleMeter) end(b *testing.B) scaleResult {
	wall := time.Since(m.start)
	wchar := scaleWchar()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	v := scaleReadMetrics("/gc/heap/allocs:bytes", "/gc/cycles/total:gc-cycles", scaleHeapMetric)
	close(m.stop)
	<-m.done
	r := scaleResult{wall: wall, cpu: scaleCPUTime(&ru) - scaleCPUTime(&m.ru), heapPeak: max(m.peak, v[2]), alloc: v[0] - m.allocs, gcs: v[1] - m.gcs}
	if m.rssResetable {
		r.rssPeak = scaleVmHWM()
	}
	seq, err := m.s.ServerEventSeq(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	r.events = seq - m.events
	if wchar >= m.wchar {
		r.ioWrite = wchar - m.wchar
	}
	m.s.mu.Lock()
	r.passes, r.applyTx, r.rowsChanged, r.rowsRead, r.sectionBytes = m.s.passes, m.s.applyTx, m.s.rowsChanged, m.s.rowsRead, m.s.sectionBytes
	m.s.mu.Unlock()
	ops := m.ops.take()
	r.dbRead = ops["computers_for_evaluation"] + ops["dynamic_group_members"] + ops["dynamic_groups"] + ops["dynamic_memberships_of"] + ops["groups"] + ops["changed_computers"]
	r.dbWrite = ops["apply_membership"]
	r.ops = ops
	return r
}

func scaleReport(b *testing.B, rs []scaleResult) {
	var sum scaleResult
	for _, r := range rs {
		sum.wall += r.wall
		sum.cpu += r.cpu
		sum.heapPeak = max(sum.heapPeak, r.heapPeak)
		sum.rssPeak = max(sum.rssPeak, r.rssPeak)
		sum.alloc += r.alloc
		sum.gcs += r.gcs
		sum.rowsChanged += r.rowsChanged
		sum.applyTx += r.applyTx
		sum.passes += r.passes
		sum.events += r.events
		sum.rowsRead += r.rowsRead
		sum.sectionBytes += r.sectionBytes
		sum.dbRead += r.dbRead
		sum.dbWrite += r.dbWrite
		sum.ioWrite += r.ioWrite
	}
	n := float64(len(rs))
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(ms(sum.wall), "wall-ms")
	b.ReportMetric(ms(sum.cpu), "cpu-ms")
	b.ReportMetric(mib(sum.heapPeak), "heap-peak-MiB")
	b.ReportMetric(mib(sum.alloc)/n, "alloc-MiB")
	if sum.rssPeak > 0 {
		b.ReportMetric(mib(sum.rssPeak), "rss-peak-MiB")
	}
	b.ReportMetric(float64(sum.gcs)/n, "gcs")
	b.ReportMetric(float64(sum.rowsChanged)/n, "rows-changed")
	b.ReportMetric(float64(sum.applyTx)/n, "write-tx")
	b.ReportMetric(float64(sum.events)/n, "events")
	b.ReportMetric(float64(sum.passes)/n, "passes")
	b.ReportMetric(float64(sum.rowsRead)/n, "rows-read")
	b.ReportMetric(mib(uint64(sum.sectionBytes))/n, "read-MiB")
	b.ReportMetric(ms(sum.dbRead), "db-read-ms")
	b.ReportMetric(ms(sum.dbWrite), "db-write-ms")
	b.ReportMetric(mib(sum.ioWrite)/n, "io-write-MiB")
	if testing.Verbose() {
		for _, r := range rs {
			var ops []string
			for op, d := range r.ops {
				ops = append(ops, fmt.Sprintf("%s %.1f", op, float64(d)/float64(time.Millisecond)))
			}
			slices.Sort(ops)
			b.Logf("ms in store operations: %s", strings.Join(ops, ", "))
		}
	}
}

// ---------------------------------------------------------------------------
// The benchmark.

type scaleLab struct {
	b      *testing.B
	db     *store.DB
	cs     *scaleCountingStore
	ops    *scaleOpTimes
	ev     *Evaluator
	oracle *Evaluator // on the plain store: computes expected memberships without touching the counters
	specs  []scaleGroupSpec
	groups map[string]*store.DynamicGroup // by name
	onB    map[string]bool                // template b in force
	// incremental: the computer that changes and its variant
	changer int
	variant int
	// the Run loop, once started
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *scaleLab) toggle(name string) string {
	g := l.groups[name]
	if g == nil {
		l.b.Fatalf("no group %q", name)
	}
	l.onB[name] = !l.onB[name]
	g.Template = l.spec(name).a
	if l.onB[name] {
		g.Template = l.spec(name).b
	}
	if err := l.db.UpdateDynamicGroup(context.Background(), g); err != nil {
		l.b.Fatal(err)
	}
	return g.ID
}

func (l *scaleLab) spec(name string) scaleGroupSpec {
	for _, s := range l.specs {
		if s.name == name {
			return s
		}
	}
	l.b.Fatalf("no spec %q", name)
	return scaleGroupSpec{}
}

// nextChange returns the changer's next inventory (software and network)
// as a check-in, and the dynamic groups it must then be in.
func (l *scaleLab) nextChange() (ci *store.CheckIn, want []string) {
	ctx := context.Background()
	l.variant++
	c := scaleGen(l.changer, l.variant)
	ci = c.checkIn(scaleT0, "software", "network")
	// Expected memberships: the evaluator's matching on the new facts.
	groups, targets, _, _, err := l.oracle.plan(ctx, nil)
	if err != nil {
		l.b.Fatal(err)
	}
	tree, err := l.db.Groups(ctx)
	if err != nil {
		l.b.Fatal(err)
	}
	row, err := l.db.ComputersForEvaluation(ctx, "", 1, []string{c.id}, []string{"system", "hardware", "network", "software", "users", "agent"})
	if err != nil || len(row) != 1 {
		l.b.Fatal(err, len(row))
	}
	for _, s := range ci.Sections {
		row[0].Sections[s.Section] = s.Data
	}
	m, err := l.oracle.match(ctx, groups, targets, tree, row, nil, scaleT0)
	if err != nil {
		l.b.Fatal(err)
	}
	for g := range m {
		want = append(want, g)
	}
	slices.Sort(want)
	return ci, want
}

func (l *scaleLab) checkIn(ci *store.CheckIn) {
	if _, err := l.db.ApplyCheckIn(context.Background(), ci); err != nil {
		l.b.Fatal(err)
	}
}

func (l *scaleLab) memberships(id string) []string {
	got, err := l.db.ComputerDynamicGroups(context.Background(), id)
	if err != nil {
		l.b.Fatal(err)
	}
	return got
}

func (l *scaleLab) allSince(t time.Time) map[string]time.Time {
	since := map[string]time.Time{}
	for _, g := range l.groups {
		since[g.ID] = t
	}
	return since
}

func (l *scaleLab) waitApplied(since map[string]time.Time, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for !l.cs.appliedAfter(since) {
		if time.Now().After(deadline) {
			l.b.Fatalf("groups not re-evaluated within %s", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startLoop starts Evaluator.Run and waits until its first pass applied
// every group.
func (l *scaleLab) startLoop() {
	l.stopLoop()
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	since := l.allSince(time.Now())
	go func() { defer close(l.done); l.ev.Run(ctx) }()
	l.waitApplied(since, 10*time.Minute)
}

func (l *scaleLab) stopLoop() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
		l.cancel = nil
	}
}

func newScaleLab(b *testing.B) *scaleLab {
	ctx := context.Background()
	golden := scaleGolden(b)
	work := b.TempDir()
	if err := scaleCopyFile(filepath.Join(work, store.FileName), golden); err != nil {
		b.Fatal(err)
	}
	ops := &scaleOpTimes{d: map[string]time.Duration{}}
	db, err := store.OpenSQLite(ctx, work, store.Options{Observer: ops.observe}) // synchronous=FULL, as in production
	if err != nil {
		b.Fatal(err)
	}
	l := &scaleLab{b: b, db: db, ops: ops, specs: scaleGroupSpecs(), groups: map[string]*store.DynamicGroup{}, onB: map[string]bool{}}
	b.Cleanup(func() { l.stopLoop(); db.Close() })
	l.cs = &scaleCountingStore{DB: db, applied: map[string]time.Time{}}
	l.ev = &Evaluator{Store: l.cs, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return scaleT0 }}
	l.ev.init()
	l.ev.seq = l.ev.currentSeq(ctx)
	l.oracle = &Evaluator{Store: db, Log: l.ev.Log, Now: l.ev.Now}
	l.oracle.init()
	gs, err := db.DynamicGroups(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, g := range gs {
		l.groups[g.Name] = g
	}
	if len(l.groups) != len(l.specs) {
		b.Fatalf("%d groups in the dataset, %d specs", len(l.groups), len(l.specs))
	}
	// The computer whose inventory changes: a Prague Linux server.
	for i := 0; ; i++ {
		if c := scaleGen(i, 0); c.site == 0 && c.role == roleSrv && c.os.family == "linux" {
			l.changer = i
			break
		}
	}
	return l
}

// BenchmarkDynGroupsScale measures re-evaluating 100 dynamic groups over
// 20,000 computers after template changes, against one group and one
// computer's change. See the top of this file.
func BenchmarkDynGroupsScale(b *testing.B) {
	scaleSkip(b)
	l := newScaleLab(b)
	ctx := context.Background()
	logMembers := true // once, with -v

	direct := func(name string, prepare func() []string, run func(ids []string) error, check func()) {
		b.Run(name, func(b *testing.B) {
			l.b = b
			var rs []scaleResult
			for range b.N {
				b.StopTimer()
				ids := prepare()
				m := scaleStartMeter(b, l.cs, l.ops)
				b.StartTimer()
				if err := run(ids); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				rs = append(rs, m.end(b))
				if check != nil {
					check()
				}
			}
			scaleReport(b, rs)
		})
	}
	full := func(ids []string) error { return l.ev.full(ctx, ids) }

	direct("one-group/software", func() []string { return []string{l.toggle(scaleBaselineSoftware)} }, full, nil)
	direct("one-group/no-inventory", func() []string { return []string{l.toggle(scaleBaselineRowOnly)} }, full, nil)
	direct("all-100/direct", func() []string {
		var ids []string
		for _, s := range l.specs {
			ids = append(ids, l.toggle(s.name))
		}
		return ids
	}, full, func() {
		if logMembers {
			logMembers = false
			var lines []string
			for _, s := range l.specs {
				lines = append(lines, fmt.Sprintf("%s=%d", s.name, len(l.must(l.db.DynamicGroupMembers(ctx, l.groups[s.name].ID)))))
			}
			b.Logf("members after the change: %s", strings.Join(lines, ", "))
		}
	})
	var want []string
	changer := scaleComputerID(l.changer)
	direct("incremental/direct", func() []string {
		var ci *store.CheckIn
		ci, want = l.nextChange()
		l.checkIn(ci) // the check-in is written before; only the evaluation is timed
		return nil
	}, func([]string) error { return l.ev.incremental(ctx) }, func() {
		if got := l.memberships(changer); !slices.Equal(got, want) {
			b.Fatalf("memberships of the changed computer %v, want %v", got, want)
		}
	})

	b.Run("startup/run-loop", func(b *testing.B) {
		l.b = b
		var rs []scaleResult
		for range b.N {
			b.StopTimer()
			l.stopLoop()
			m := scaleStartMeter(b, l.cs, l.ops)
			b.StartTimer()
			l.startLoop()
			b.StopTimer()
			rs = append(rs, m.end(b))
		}
		scaleReport(b, rs)
	})
	b.Run("all-100/run-loop", func(b *testing.B) {
		l.b = b
		if l.cancel == nil {
			l.startLoop()
		}
		var rs []scaleResult
		for range b.N {
			b.StopTimer()
			since := map[string]time.Time{}
			m := scaleStartMeter(b, l.cs, l.ops)
			b.StartTimer()
			for _, s := range l.specs {
				id := l.toggle(s.name) // UpdateDynamicGroup, then Reevaluate: as the HTTP API does
				since[id] = time.Now()
				l.ev.Reevaluate(id)
			}
			l.waitApplied(since, 10*time.Minute)
			b.StopTimer()
			rs = append(rs, m.end(b))
		}
		scaleReport(b, rs)
	})
	b.Run("incremental/run-loop", func(b *testing.B) {
		l.b = b
		if l.cancel == nil {
			l.startLoop()
		}
		var rs []scaleResult
		for range b.N {
			b.StopTimer()
			ci, want := l.nextChange()
			m := scaleStartMeter(b, l.cs, l.ops)
			b.StartTimer()
			l.checkIn(ci) // from the check-in (committed with fsync) until the memberships are right
			deadline := time.Now().Add(time.Minute)
			for !slices.Equal(l.memberships(changer), want) {
				if time.Now().After(deadline) {
					b.Fatalf("memberships of the changed computer %v, want %v", l.memberships(changer), want)
				}
				time.Sleep(2 * time.Millisecond)
			}
			b.StopTimer()
			rs = append(rs, m.end(b))
		}
		scaleReport(b, rs)
	})
}

func (l *scaleLab) must(v []string, err error) []string {
	if err != nil {
		l.b.Fatal(err)
	}
	return v
}

// TestScaleBenchSections keeps the benchmark's inventory in the shape the
// server stores: every section decodes strictly into its agentproto message,
// and the facts the rules read come out of it. Cheap: one computer.
func TestScaleBenchSections(t *testing.T) {
	msgs := map[string]proto.Message{"system": &agentproto.SystemInfo{}, "hardware": &agentproto.HardwareInfo{}, "network": &agentproto.NetworkInfo{},
		"software": &agentproto.SoftwareInfo{}, "users": &agentproto.UsersInfo{}, "agent": &agentproto.AgentInfo{}}
	for _, i := range []int{0, 1, 2, 3, 17} {
		c := scaleGen(i, 1)
		secs := map[string]string{}
		for _, s := range c.sections() {
			m, ok := msgs[s.Section]
			if !ok {
				t.Fatalf("unknown section %q", s.Section)
			}
			proto.Reset(m)
			if err := protojson.Unmarshal([]byte(s.Data), m); err != nil {
				t.Fatalf("section %s of computer %d does not decode as %T: %v\n%s", s.Section, i, m, err, s.Data)
			}
			secs[s.Section] = s.Data
		}
		if len(secs) != len(msgs) {
			t.Fatalf("sections %v", secs)
		}
		f := NewFacts(&store.Computer{ID: c.id, Hostname: c.name}, c.tags, secs, scaleT0)
		if f.Architecture != c.os.arch || f.RAMBytes != int64(c.ramGiB<<30) || f.CPUCores != int64(c.cores) || len(f.Software) != len(c.pkgs) ||
			len(f.IPs) < 3 || len(f.MACs) < 1 || len(f.LoggedInUsers) != len(c.users) {
			t.Fatalf("facts of computer %d: %+v", i, f)
		}
		if len(c.pkgs) < 250 || len(c.pkgs) > 351 {
			t.Fatalf("computer %d has %d packages", i, len(c.pkgs))
		}
	}
	if specs := scaleGroupSpecs(); len(specs) != 100 {
		t.Fatalf("%d group specs, want 100", len(specs))
	}
	if n := len(scaleBase) + len(scaleTargets) + len(scaleFillers); n != 2000 {
		t.Fatalf("vocabulary of %d names, want 2000", n)
	}
}
