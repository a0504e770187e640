//go:build !unix

package sser

import (
	"errors"
	"net"
	"syscall"
)

// writableSocket: writing without waiting is Unix only; elsewhere each
// batch the pool cannot write at once goes to a goroutine of its own.
func writableSocket(net.Conn) syscall.RawConn { return nil }

func writeNow(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }
