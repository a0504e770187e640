// Package testproc runs real sser processes for tests: each replica is the
// real binary bound to its own loopback address (127.0.0.2, 127.0.0.3, ...)
// with the same ports, as pods are. Everything started is stopped on test
// cleanup, and every wait has a deadline.
package testproc
