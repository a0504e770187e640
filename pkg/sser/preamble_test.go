package sser

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// readUntil reads the raw stream up to and including the first line that
// has want in it, and returns it all.
func readUntil(t *testing.T, resp *http.Response, want string) string {
	t.Helper()
	br := bufio.NewReader(resp.Body)
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if strings.Contains(line, want) {
			return b.String()
		}
		if err != nil {
			t.Fatalf("stream ended (%v) before %q; read %q", err, want, b.String())
		}
	}
}

// The connect preamble (retry, then an id-only frame) is sent unless the
// server or the subscriber turns it off; the subscriber's choice wins.
func TestConnectPreambleSwitch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     Options
		query    string
		preamble bool
	}{
		{"default", Options{}, "", true},
		{"subscriber turns it off", Options{}, "&preamble=0", false},
		{"server turns it off", Options{NoPreamble: true}, "", false},
		{"subscriber turns it back on", Options{NoPreamble: true}, "&preamble=1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.opts)
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.url("stream=s"+tc.query), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ts.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if err := ts.Send(t.Context(), "s", "hello"); err != nil {
				t.Fatal(err)
			}
			got := readUntil(t, resp, "data: hello")
			if has := strings.HasPrefix(got, "retry: "); has != tc.preamble {
				t.Fatalf("stream starts %q; preamble wanted: %v", got, tc.preamble)
			}
			if !tc.preamble && !strings.HasPrefix(got, "id: ") {
				t.Fatalf("without the preamble the first frame is the event: %q", got)
			}
			if tc.preamble && strings.Count(got, "\n\n") != 2 {
				t.Fatalf("want the retry frame, the id-only frame, then the event: %q", got)
			}
		})
	}
	ts := startServer(t, Options{})
	resp, body := ts.get(t, "/?stream=s&preamble=no")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "preamble") {
		t.Fatalf("preamble=no: %d %s", resp.StatusCode, body)
	}
}
