//go:build linux

package inventory

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori/mamori/internal/agentproto"
)

// Collector gathers inventory on Linux. It is safe for use by one goroutine
// at a time; it caches what is costly (the package list, keyed by the
// package database's modification time; the FQDN).
type Collector struct {
	opt Options

	pkgStamp string
	pkgs     *agentproto.SoftwareInfo
	fqdn     string
	fqdnAt   time.Time
}

// NewCollector returns the collector of this platform.
func NewCollector(opt Options) (*Collector, error) { return &Collector{opt: opt}, nil }

func (c *Collector) path(p string) string { return filepath.Join(c.opt.Root, p) }

func (c *Collector) read(p string) []byte {
	f, err := os.Open(c.path(p))
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, 0, 4096)
	for len(b) < 64<<20 { // bounded: no system file we read is this large
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			break
		}
	}
	return b
}

func (c *Collector) readString(p string) string { return clean(string(c.read(p))) }

// Collect gathers every section.
func (c *Collector) Collect(ctx context.Context) (*Snapshot, error) {
	return NewSnapshot(c.system(ctx), c.hardware(), c.network(), c.software(ctx), c.users(), agentInfo(c.opt)), nil
}

func (c *Collector) system(ctx context.Context) *agentproto.SystemInfo {
	host, _ := os.Hostname()
	osr := ParseOSRelease(c.read("/etc/os-release"))
	if len(osr) == 0 {
		osr = ParseOSRelease(c.read("/usr/lib/os-release"))
	}
	version := osr["VERSION_ID"]
	if version == "" {
		version = osr["VERSION"]
	}
	name := osr["NAME"]
	if name == "" {
		name = "Linux"
	}
	var uts unix.Utsname
	kernel := ""
	if unix.Uname(&uts) == nil {
		kernel = clean(unix.ByteSliceToString(uts.Release[:]))
	}
	tz := c.readString("/etc/timezone")
	if tz == "" {
		if l, err := os.Readlink(c.path("/etc/localtime")); err == nil {
			if _, after, ok := strings.Cut(l, "zoneinfo/"); ok {
				tz = after
			}
		}
	}
	return &agentproto.SystemInfo{
		Hostname:     clean(host),
		Fqdn:         c.lookupFQDN(ctx, host),
		OsFamily:     "linux",
		OsName:       name,
		OsVersion:    version,
		Kernel:       kernel,
		Architecture: runtime.GOARCH,
		BootTimeUnix: ParseBootTime(c.read("/proc/stat")),
		Timezone:     clean(tz),
	}
}

func (c *Collector) lookupFQDN(ctx context.Context, host string) string {
	if time.Since(c.fqdnAt) < time.Hour && c.fqdnAt.After(time.Time{}) {
		return c.fqdn
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	c.fqdn, c.fqdnAt = clean(host), time.Now()
	if cname, err := net.DefaultResolver.LookupCNAME(ctx, host); err == nil && cname != "" {
		c.fqdn = clean(strings.TrimSuffix(cname, "."))
	}
	return c.fqdn
}

func (c *Collector) hardware() *agentproto.HardwareInfo {
	hw := &agentproto.HardwareInfo{
		CpuModel: ParseCPUModel(c.read("/proc/cpuinfo")),
		CpuCores: uint32(runtime.NumCPU()),
		RamBytes: ParseMeminfo(c.read("/proc/meminfo")),
		Vendor:   c.readString("/sys/class/dmi/id/sys_vendor"),
		Product:  c.readString("/sys/class/dmi/id/product_name"),
		Serial:   c.readString("/sys/class/dmi/id/product_serial"),
	}
	for _, m := range ParseMounts(c.read("/proc/mounts")) {
		d := &agentproto.Disk{Device: m.Device, MountPoint: m.Point, Filesystem: m.FS}
		var st unix.Statfs_t
		if unix.Statfs(c.path(m.Point), &st) == nil {
			d.SizeBytes = st.Blocks * uint64(st.Bsize)
			d.FreeGib = st.Bavail * uint64(st.Bsize) >> 30
		}
		hw.Disks = append(hw.Disks, d)
	}
	return hw
}

func (c *Collector) network() *agentproto.NetworkInfo {
	n := &agentproto.NetworkInfo{}
	ifs, err := net.Interfaces()
	if err != nil {
		return n
	}
	for _, i := range ifs {
		if len(n.Interfaces) >= maxInterfaces {
			break
		}
		ni := &agentproto.NetworkInterface{Name: clean(i.Name), Mac: i.HardwareAddr.String(),
			Up: i.Flags&net.FlagUp != 0, Loopback: i.Flags&net.FlagLoopback != 0}
		if addrs, err := i.Addrs(); err == nil {
			for _, a := range addrs {
				ni.Addresses = append(ni.Addresses, a.String())
			}
			slices.Sort(ni.Addresses)
		}
		n.Interfaces = append(n.Interfaces, ni)
	}
	slices.SortFunc(n.Interfaces, func(a, b *agentproto.NetworkInterface) int { return strings.Compare(a.Name, b.Name) })
	return n
}

func (c *Collector) software(ctx context.Context) *agentproto.SoftwareInfo {
	dpkg := c.path("/var/lib/dpkg/status")
	if st, err := os.Stat(dpkg); err == nil {
		stamp := fmt.Sprint("dpkg:", st.ModTime().UnixNano(), ":", st.Size())
		if stamp != c.pkgStamp || c.pkgs == nil {
			c.pkgs = &agentproto.SoftwareInfo{Source: "dpkg", Packages: ParseDpkgStatus(c.read("/var/lib/dpkg/status"))}
			c.pkgStamp = stamp
		}
		return c.pkgs
	}
	if st, err := os.Stat(c.path("/var/lib/rpm")); err == nil && st.IsDir() {
		if _, err := exec.LookPath("rpm"); err == nil {
			stamp := "rpm:" + st.ModTime().String()
			if stamp != c.pkgStamp || c.pkgs == nil {
				ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, "rpm", "-qa", "--qf", `%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n`).Output()
				if err == nil {
					c.pkgs = &agentproto.SoftwareInfo{Source: "rpm", Packages: ParseRPMQuery(out)}
					c.pkgStamp = stamp
				}
			}
			if c.pkgs != nil {
				return c.pkgs
			}
		}
	}
	return &agentproto.SoftwareInfo{}
}

func (c *Collector) users() *agentproto.UsersInfo {
	b := c.read("/run/utmp")
	if b == nil {
		b = c.read("/var/run/utmp")
	}
	return &agentproto.UsersInfo{LoggedIn: ParseUtmp(b)}
}
