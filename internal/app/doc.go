// Package app is the sser command: its subcommands, flags, environment,
// logging and the wiring from options to a running server. cmd/sser only
// calls Main.
package app
