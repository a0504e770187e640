package sser

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
)

// closeWatcher tells when clients of hijacked connections close their
// side, with no goroutine per connection: each socket is registered once
// (edge, one shot) in an epoll set for EPOLLRDHUP, and one goroutine waits
// on that set through Go's own poller (the epoll descriptor is itself
// pollable), so an idle watcher holds no thread. Registrations are never
// removed: closing the socket removes it from the set, and each carries a
// token of its own, so an event that comes after its connection ended (and
// the descriptor was reused) finds no subscriber.
//
// Without it, a client that goes away is found by the next write to it (a
// heartbeat at the latest), as it is for a connection that cannot be
// watched (one that is not a socket).
type closeWatcher struct {
	gone func(*subscriber)
	f    *os.File
	epfd int

	mu   sync.Mutex
	subs map[uint64]*subscriber
	next uint64
}

func newCloseWatcher(gone func(*subscriber)) (*closeWatcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	w := &closeWatcher{gone: gone, f: os.NewFile(uintptr(epfd), "sser-close-watcher"), epfd: epfd, subs: make(map[uint64]*subscriber)}
	rc, err := w.f.SyscallConn()
	if err != nil {
		_ = w.f.Close()
		return nil, err
	}
	go w.run(rc)
	return w, nil
}

func (w *closeWatcher) run(rc syscall.RawConn) {
	events := make([]syscall.EpollEvent, 128)
	var ready []*subscriber
	// RawConn.Read calls the function until it returns true, waiting in
	// Go's poller for the epoll descriptor to become readable (an event is
	// ready) whenever it returns false. It fails once the file is closed.
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), events, 0)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if n <= 0 {
				return false
			}
			w.mu.Lock()
			for _, ev := range events[:n] {
				tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				if sub := w.subs[tok]; sub != nil {
					delete(w.subs, tok)
					ready = append(ready, sub)
				}
			}
			w.mu.Unlock()
			for i, sub := range ready {
				w.gone(sub)
				ready[i] = nil
			}
			ready = ready[:0]
			if n < len(events) {
				return false
			}
		}
	})
}

// add watches conn for sub: the token to forget it by, 0 when conn cannot
// be watched.
func (w *closeWatcher) add(sub *subscriber, conn net.Conn) uint64 {
	if w == nil {
		return 0
	}
	return w.register(sub, rawConnOf(conn), syscall.EPOLLRDHUP, syscall.EPOLL_CTL_ADD, 0)
}

// register asks epoll, once, for events on rc for sub (ctl: add, or
// modify to watch again under the token tok).
func (w *closeWatcher) register(sub *subscriber, rc syscall.RawConn, events uint32, ctl int, tok uint64) uint64 {
	if rc == nil {
		return 0
	}
	w.mu.Lock()
	if tok == 0 {
		w.next++
		tok = w.next
	}
	w.subs[tok] = sub
	w.mu.Unlock()
	ev := syscall.EpollEvent{Events: events | syscall.EPOLLONESHOT, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.EpollCtl(w.epfd, ctl, int(fd), &ev)
	}); cerr != nil || err != nil {
		w.forget(tok)
		return 0
	}
	return tok
}

func (w *closeWatcher) forget(tok uint64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	delete(w.subs, tok)
	w.mu.Unlock()
}

func (w *closeWatcher) close() {
	if w == nil {
		return
	}
	_ = w.f.Close()
}

// rawConnOf is the socket under conn: conn's own when it has one (a
// listener's wrapper may pass it on), else that of the connection it wraps
// (a *tls.Conn's), else nil.
func rawConnOf(conn net.Conn) syscall.RawConn {
	for {
		if sc, ok := conn.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		}
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		conn = u.NetConn()
	}
}
