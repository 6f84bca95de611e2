package loadtest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/mamori/mamori/internal/agent/inventory"
	"github.com/mamori/mamori/internal/agentproto"
)

// A simulated computer's inventory is a pure function of its name and a
// software revision, so the harness keeps only the seed, the revision and
// the section hashes in memory (tens of bytes per agent instead of the
// hundreds of kilobytes a 2,000-package list takes) and rebuilds the
// sections when it has to send them.

type osProfile struct {
	family, name, version, kernel, arch, source string
}

var osProfiles = []osProfile{
	{"linux", "Debian GNU/Linux", "12", "6.1.0-28-amd64", "amd64", "dpkg"},
	{"linux", "Ubuntu", "24.04", "6.8.0-49-generic", "amd64", "dpkg"},
	{"linux", "Ubuntu", "22.04", "5.15.0-126-generic", "amd64", "dpkg"},
	{"linux", "Red Hat Enterprise Linux", "9.5", "5.14.0-503.el9.x86_64", "amd64", "rpm"},
	{"linux", "Rocky Linux", "8.10", "4.18.0-553.el8_10.x86_64", "amd64", "rpm"},
	{"linux", "Debian GNU/Linux", "12", "6.1.0-28-arm64", "arm64", "dpkg"},
	{"windows", "Windows 11 Pro", "23H2", "10.0.22631", "amd64", "msi"},
	{"windows", "Windows Server 2022", "21H2", "10.0.20348", "amd64", "msi"},
	{"darwin", "macOS", "14.7", "23.6.0", "arm64", "pkgutil"},
}

var cpuModels = []string{"Intel(R) Core(TM) i5-8500", "Intel(R) Xeon(R) Silver 4314", "AMD Ryzen 7 PRO 5850U", "Apple M2", "AMD EPYC 7763"}

// packageNames is a shared vocabulary (one allocation for all agents).
var packageNames = func() []string {
	stems := []string{"lib", "python3-", "perl-", "golang-", "node-", "x11-", "gnome-", "kde-", "fonts-", "ruby-", "php-", "r-cran-", "texlive-", "qt5-", "gir1.2-"}
	words := []string{"ssl", "crypto", "xml", "json", "yaml", "curl", "zlib", "png", "jpeg", "tiff", "gtk", "glib", "dbus", "systemd", "pam", "krb5",
		"ldap", "sasl", "sqlite", "pq", "mysql", "uuid", "ffi", "gmp", "mpfr", "readline", "ncurses", "bz2", "lzma", "zstd", "pcre", "icu",
		"harfbuzz", "freetype", "cairo", "pango", "pixbuf", "atk", "wayland", "drm", "mesa", "vulkan", "alsa", "pulse", "udev", "usb",
		"bluetooth", "nm", "polkit", "selinux", "apparmor", "audit", "cap", "seccomp", "acl", "attr", "nettle", "gnutls", "p11", "tasn1"}
	var out []string
	for _, s := range stems {
		for _, w := range words {
			out = append(out, s+w)
		}
	}
	return out // 15 * 64 = 960 names; longer lists reuse them with a suffix
}()

// simInventory describes one simulated computer.
type simInventory struct {
	seed     uint64
	name     string
	instance string
	fp       string
	packages int
}

func newSimInventory(name, instance, fp string, minPk, maxPk int) simInventory {
	sum := sha256.Sum256([]byte("inventory\x00" + name))
	seed := binary.LittleEndian.Uint64(sum[:8])
	n := minPk
	if maxPk > minPk {
		n += int(seed>>20) % (maxPk - minPk + 1)
	}
	return simInventory{seed: seed, name: name, instance: instance, fp: fp, packages: n}
}

// snapshot builds the inventory at a software revision: revision r changes
// the versions of changed packages (a fraction of the list when changed is
// below 1, else that many; at least one) relative to r-1, and every third
// revision installs a package, as an update run would.
func (v simInventory) snapshot(revision int, changed float64) *inventory.Snapshot {
	r := rand.New(rand.NewPCG(v.seed, 0x6d616d6f7269))
	osp := osProfiles[r.IntN(len(osProfiles))]
	sys := &agentproto.SystemInfo{Hostname: v.name, Fqdn: v.name + ".corp.example", OsFamily: osp.family, OsName: osp.name,
		OsVersion: osp.version, Kernel: osp.kernel, Architecture: osp.arch, BootTimeUnix: 1_760_000_000 + int64(r.IntN(5_000_000)), Timezone: "Europe/Prague"}
	hw := &agentproto.HardwareInfo{CpuModel: cpuModels[r.IntN(len(cpuModels))], CpuCores: uint32(2 << r.IntN(4)), RamBytes: uint64(4<<r.IntN(5)) << 30,
		Vendor: "Dell Inc.", Product: "OptiPlex 7070", Serial: fmt.Sprintf("SN%010d", r.Uint32())}
	for d := range 1 + r.IntN(3) {
		hw.Disks = append(hw.Disks, &agentproto.Disk{Device: fmt.Sprintf("/dev/nvme0n1p%d", d+1), MountPoint: []string{"/", "/home", "/var"}[d],
			Filesystem: "ext4", SizeBytes: uint64(128<<r.IntN(4)) << 30, FreeGib: uint64(10 + r.IntN(200))})
	}
	nw := &agentproto.NetworkInfo{}
	for i := range 1 + r.IntN(4) {
		nw.Interfaces = append(nw.Interfaces, &agentproto.NetworkInterface{Name: fmt.Sprintf("eth%d", i),
			Mac:       fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256)),
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d/16", r.IntN(256), r.IntN(256), 1+r.IntN(254))}, Up: i == 0 || r.IntN(2) == 0})
	}
	users := &agentproto.UsersInfo{}
	if r.IntN(2) == 0 {
		users.LoggedIn = []*agentproto.LoggedInUser{{Name: "user" + fmt.Sprint(r.IntN(1000)), Terminal: "tty2", SinceUnix: 1_760_000_000}}
	}
	vr := rand.New(rand.NewPCG(v.seed, 0x76657273))
	n := v.packages + revision/3
	pk := make([]*agentproto.Package, n)
	for i := range pk {
		name := packageNames[i%len(packageNames)]
		if i >= len(packageNames) {
			name += fmt.Sprintf("-%d", i/len(packageNames))
		}
		pk[i] = &agentproto.Package{Name: name, Version: fmt.Sprintf("%d.%d.%d-%d", vr.IntN(9), vr.IntN(20), vr.IntN(99), vr.IntN(5)), Architecture: osp.arch}
	}
	// Revisions bump a few versions each.
	cr := rand.New(rand.NewPCG(v.seed, 0x636875726e))
	per := int(changed)
	if changed < 1 {
		per = int(changed * float64(len(pk)))
	}
	per = max(per, 1)
	for rev := 1; rev <= revision; rev++ {
		for range per {
			p := pk[cr.IntN(len(pk))]
			p.Version += fmt.Sprintf("+u%d", rev)
		}
	}
	sw := &agentproto.SoftwareInfo{Source: osp.source, Packages: pk}
	ag := &agentproto.AgentInfo{Version: "loadtest", CapabilityVersion: agentproto.CapabilityVersion, Instance: v.instance, HardwareFingerprint: v.fp}
	return inventory.NewSnapshot(sys, hw, nw, sw, users, ag)
}
