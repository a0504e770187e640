//go:build !linux

package sser

import (
	"errors"
	"net"
)

// closeWatcher is Linux only (epoll); elsewhere a client that goes away is
// found by the next write to it, a heartbeat at the latest.
type closeWatcher struct{}

func newCloseWatcher(func(*subscriber)) (*closeWatcher, error) { return nil, errors.ErrUnsupported }

func (w *closeWatcher) add(*subscriber, net.Conn) uint64 { return 0 }
func (w *closeWatcher) forget(uint64)                    {}
func (w *closeWatcher) close()                           {}
