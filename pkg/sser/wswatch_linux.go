package sser

import (
	"net"
	"syscall"
)

// addReadable watches the socket conn is (not one it wraps: a TLS
// connection holds records its socket does not show) for input from the
// client, its close included: once, until rearm. The token to forget it
// by; 0 when conn cannot be watched so.
func (w *closeWatcher) addReadable(sub *subscriber, conn net.Conn) uint64 {
	sc, ok := conn.(syscall.Conn)
	if w == nil || !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	return w.register(sub, rc, syscall.EPOLLIN|syscall.EPOLLRDHUP, syscall.EPOLL_CTL_ADD, 0)
}

// rearm watches conn for input again, under its token; false when it
// cannot be.
func (w *closeWatcher) rearm(sub *subscriber, conn net.Conn, tok uint64) bool {
	sc, ok := conn.(syscall.Conn)
	if w == nil || !ok || tok == 0 {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return w.register(sub, rc, syscall.EPOLLIN|syscall.EPOLLRDHUP, syscall.EPOLL_CTL_MOD, tok) != 0
}
