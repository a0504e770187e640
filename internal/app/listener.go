package app

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// listenerSlack is how many sockets the frontend listener keeps open past
// the subscription cap: the library answers the first of them itself (a
// JSON 503 counted as "connections"), and the demo page, 404s and idle
// keep-alive sockets need a few. Past it the listener answers alone.
const listenerSlack = 64

// maxRefusers bounds the refusals being written at once; past it a socket
// is closed without an answer, so a flood cannot pile up goroutines.
const maxRefusers = 64

// refuseLinger is how long a refused socket is kept to write its answer and
// read what the client already sent: closing a socket with unread input
// resets it, and the reset can overtake the answer.
const refuseLinger = time.Second

// capListener caps the sockets open on the frontend. Past max an accepted
// socket is answered 503 with Retry-After and closed at once, before any
// request is read, so idle or header-trickling sockets cannot take the
// descriptors the internal port, peers and probes need.
type capListener struct {
	net.Listener
	max      int64
	refused  func() // counts one refusal
	open     atomic.Int64
	refusing chan struct{}
}

func newCapListener(ln net.Listener, max int, refused func()) *capListener {
	return &capListener{Listener: ln, max: int64(max), refused: refused, refusing: make(chan struct{}, maxRefusers)}
}

// Accept returns the next socket under the cap, refusing those past it.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &cappedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		l.refuse(c)
	}
}

// refuse answers c 503 and closes it, off the accept loop.
func (l *capListener) refuse(c net.Conn) {
	if l.refused != nil {
		l.refused()
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := io.WriteString(c, refusal()); err != nil {
			return
		}
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

const refusalBody = `{"error":"too many connections to this replica; retry later"}` + "\n"

// refusal is the listener's answer, with a jittered Retry-After of 2 to 4
// seconds so refused clients do not come back in step.
func refusal() string {
	return "HTTP/1.1 503 Service Unavailable\r\n" +
		"Content-Type: application/json\r\n" +
		"Retry-After: " + strconv.Itoa(2+rand.N(3)) + "\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(refusalBody)) + "\r\n\r\n" + refusalBody
}

// cappedConn gives its slot back when closed.
type cappedConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *cappedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// SyscallConn passes on the socket's, so that the library can watch a
// hijacked subscription for its client closing (closing stays this
// wrapper's: the library closes what net/http handed it).
func (c *cappedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// frontendCap is the frontend listener's socket cap for the subscription
// cap maxConns (as the flag gives it): 0 derives it as the library does,
// negative means no cap (0 returned).
func frontendCap(maxConns int, derived func() int) int {
	switch {
	case maxConns < 0:
		return 0
	case maxConns == 0:
		maxConns = derived()
	}
	return maxConns + listenerSlack
}
