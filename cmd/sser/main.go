// Command sser runs a replica of the sser Server-Sent Events service, or
// publishes and subscribes as a client (sser pub, sser sub).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sser-dev/sser/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
