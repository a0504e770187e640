//go:build !linux

package sser

import "net"

func (w *closeWatcher) addReadable(*subscriber, net.Conn) uint64 { return 0 }
func (w *closeWatcher) rearm(*subscriber, net.Conn, uint64) bool { return false }
