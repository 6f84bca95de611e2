//go:build !linux

package inventory

import "context"

// Collector is not implemented on this platform yet.
type Collector struct{}

// NewCollector returns ErrNotSupported on this platform.
func NewCollector(opt Options) (*Collector, error) { return nil, ErrNotSupported }

// Collect returns ErrNotSupported on this platform.
func (c *Collector) Collect(ctx context.Context) (*Snapshot, error) { return nil, ErrNotSupported }
