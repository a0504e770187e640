//go:build unix

package sser

import (
	"errors"
	"net"
	"syscall"
)

// writableSocket is conn's socket when conn writes its bytes to it
// unchanged: conn is the socket, or a wrapper that passes SyscallConn on
// (the frontend listener's). A *tls.Conn has no SyscallConn of its own.
func writableSocket(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// writeNow writes as much of b as the socket takes without waiting: all
// of it, part (the socket's buffer is full), or an error. Go's poller is
// bypassed for this one attempt; the write deadline still applies (an
// expired one fails it).
func writeNow(rc syscall.RawConn, b []byte) (int, error) {
	n := 0
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, err := syscall.Write(int(fd), b[n:])
			if k > 0 {
				n += k
			}
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return true
			case err != nil:
				werr = err
				return true
			case k == 0:
				werr = syscall.EIO
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, werr
}
