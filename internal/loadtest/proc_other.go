//go:build !unix

package loadtest

import "time"

// raiseFileLimit: no open-files limit to raise here; 0 is "unknown".
func raiseFileLimit() uint64 { return 0 }

// clientCPU: not measured here (0 is "unknown").
func clientCPU() time.Duration { return 0 }
