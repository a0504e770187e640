package proc

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	line := []byte("1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 8 0 100 0 0\n")
	got, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2870 * time.Millisecond; got != want {
		t.Fatalf("parseStat = %v, want %v", got, want)
	}
	if _, err := parseStat([]byte("1234 (x) S 1 2")); err == nil {
		t.Fatal("a short line parsed without error")
	}
}

func TestCPUTimeOfSelfGrows(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin for at least 30 ms of CPU, bounded by a wall-clock cap.
	end := time.Now().Add(2 * time.Second)
	x := 0
	for time.Now().Before(end) {
		for i := range 1_000_000 {
			x += i
		}
		if now, _ := CPUTime(os.Getpid()); now-before >= 30*time.Millisecond {
			return
		}
	}
	t.Fatalf("CPU time did not grow by 30ms in 2s of spinning (%d)", x)
}
