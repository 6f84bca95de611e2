package e2e

import (
	"net"
	"time"

	"github.com/mamori/mamori/internal/enrollment"
)

func hashSecret(s string) string { return enrollment.HashSecret(s) }

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
