package testproc

import (
	"fmt"
	"os"
	"testing"
)

// RequireReal skips t because a real part (a control plane, helm, a
// browser, a loopback address) is missing, or fails it when
// SSER_REQUIRE_REAL=1 says every real part must be there, as in CI.
func RequireReal(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("SSER_REQUIRE_REAL") == "1" {
		t.Fatalf("%s (SSER_REQUIRE_REAL=1)", msg)
	}
	t.Skip(msg)
}
