package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
)

// MachineIDEnv overrides the machine id the hardware fingerprint is built
// from. It exists for tests and for images that share /etc/machine-id on
// purpose; it is not needed in normal use.
const MachineIDEnv = "MAMORI_AGENT_MACHINE_ID"

// HardwareFingerprint identifies the machine (and the agent instance on it):
// SHA-256 over the OS machine id, the firmware's product UUID where readable,
// and the instance name. Copying a state directory to another machine
// changes it, which is how the server tells clones from reconnects. Two
// agents on one host differ by instance name.
func HardwareFingerprint(instance string) string {
	machine := strings.TrimSpace(os.Getenv(MachineIDEnv))
	product := ""
	if machine == "" {
		machine = readTrim("/etc/machine-id")
		if machine == "" {
			machine = readTrim("/var/lib/dbus/machine-id")
		}
		product = readTrim("/sys/class/dmi/id/product_uuid")
	}
	if machine == "" && product == "" {
		// No stable id on this system: fall back to the host name so that
		// at least clones under other names are told apart.
		machine, _ = os.Hostname()
	}
	sum := sha256.Sum256([]byte("mamori-hw-v1\x00" + machine + "\x00" + product + "\x00" + instance))
	return hex.EncodeToString(sum[:])
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil || len(b) > 4096 {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// bootID is the kernel's boot id (Linux), empty elsewhere.
func bootID() string { return readTrim("/proc/sys/kernel/random/boot_id") }
