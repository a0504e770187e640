package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

const pubUsage = `Usage: sser pub [flags] [MESSAGE...]

Publish an event to every subscriber of a stream on every replica, through a
replica's internal API (POST <url>/api/json/v1/publish). The message is the
arguments joined by spaces; with none, every line of standard input is
published as its own event (empty lines are skipped).

A replica that is shutting down, or holding publishers back while a peer
catches up, answers 503 with Retry-After; sser pub waits as told and tries
again, up to --retries times. With --idempotency-key, a publish the replica
already accepted is not applied twice (from stdin, the n-th event is sent
with the key <key>.<n>, so a rerun of the same input publishes only what
is missing).

Examples:
  sser pub --stream prices '{"eur":1.08}'
  tail -F app.log | sser pub --stream logs --event line
  kubectl exec deploy/app -c sser -- sser pub --stream demo hello

Flags:
`

// pubPath is the internal publish endpoint, appended to a --url with no path.
const pubPath = "/api/json/v1/publish"

// pubMaxLine bounds one stdin line (one event).
const pubMaxLine = 16 << 20

// pubMaxRetryAfter bounds one wait for a Retry-After, however long the
// replica asks for.
const pubMaxRetryAfter = 30 * time.Second

// pubMaxKey is the longest Idempotency-Key a replica accepts.
const pubMaxKey = 128

var pubErrNoStream = errors.New("sser: --stream is required")

// pubEvent is the publish body (the peer wire format's required fields and
// the event type).
type pubEvent struct {
	Stream string `json:"stream"`
	Msg    string `json:"msg"`
	Event  string `json:"event,omitempty"`
	Retain bool   `json:"retain,omitempty"`
}

// RunPub is `sser pub`: it publishes the message in args, or one event per
// line of stdin, and returns the first failure with the server's reason.
func RunPub(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sser pub", flag.ContinueOnError)
	defURL := "http://localhost:7000"
	if v := os.Getenv("SSER_URL"); v != "" {
		defURL = v
	}
	rawURL := fs.String("url", defURL, "internal address of an sser replica, or the full publish URL [SSER_URL]")
	stream := fs.String("stream", "", "stream to publish to (required)")
	event := fs.String("event", "", `SSE event type (default "message")`)
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each publish request")
	defToken := os.Getenv("SSER_PUBLISH_TOKEN")
	if defToken == "" {
		defToken = os.Getenv("SSER_INTERNAL_TOKEN")
	}
	token := fs.String("token", defToken, "the publish token, when the replicas require one [SSER_PUBLISH_TOKEN, else SSER_INTERNAL_TOKEN]")
	key := fs.String("idempotency-key", "", "sent as the Idempotency-Key header, so a retried publish is applied once (1-128 printable ASCII characters; from stdin, the n-th event gets <key>.<n>)")
	retries := fs.Int("retries", 3, "how many times to retry a publish answered 503 with Retry-After")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	retain := fs.Bool("retain", false, "make the event the stream's retained state: new subscribers get it first")
	clearRetained := fs.Bool("clear-retained", false, "clear the stream's retained state (no message)")
	if err := parseFlags(fs, args, stdout, pubUsage); err != nil {
		return err
	}
	if *stream == "" {
		return &usageError{msg: pubErrNoStream.Error()}
	}
	endpoint, err := pubEndpoint(*rawURL)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if *key != "" {
		if err := checkIdempotencyKey(*key); err != nil {
			return &usageError{msg: err.Error()}
		}
	}
	if *retries < 0 {
		return &usageError{msg: fmt.Sprintf("--retries must not be negative, got %d", *retries)}
	}
	p := &pubClient{url: endpoint, timeout: *timeout, token: *token, retries: *retries, hc: &http.Client{}, sleep: sleepCtx}
	defer p.hc.CloseIdleConnections()

	var sum pubSummary
	defer func() {
		if !*quiet {
			sum.print(stderr, *stream)
		}
	}()
	if *clearRetained {
		if fs.NArg() > 0 || *retain {
			return &usageError{msg: "--clear-retained takes no message and no --retain"}
		}
		ans, err := p.publish(ctx, pubEvent{Stream: *stream, Retain: true}, *key)
		sum.add(ans)
		return err
	}
	if fs.NArg() > 0 {
		ans, err := p.publish(ctx, pubEvent{Stream: *stream, Msg: strings.Join(fs.Args(), " "), Event: *event, Retain: *retain}, *key)
		sum.add(ans)
		return err
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, 64<<10), pubMaxLine)
	n := 0
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		n++
		k := ""
		if *key != "" {
			k = fmt.Sprintf("%s.%d", *key, n)
		}
		ans, err := p.publish(ctx, pubEvent{Stream: *stream, Msg: line, Event: *event, Retain: *retain}, k)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		sum.add(ans)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	return nil
}

// pubEndpoint accepts a base URL (the publish path is added) or a full one.
func pubEndpoint(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("sser: --url %q is not an http(s) URL", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = pubPath
	}
	return u.String(), nil
}

// checkIdempotencyKey accepts what a replica accepts as Idempotency-Key:
// 1 to 128 printable ASCII characters.
func checkIdempotencyKey(k string) error {
	if len(k) == 0 || len(k) > pubMaxKey {
		return fmt.Errorf("sser: --idempotency-key must be 1 to %d characters, got %d", pubMaxKey, len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return fmt.Errorf("sser: --idempotency-key %q: only printable ASCII characters", k)
		}
	}
	return nil
}

type pubClient struct {
	url     string
	token   string
	timeout time.Duration
	retries int
	hc      *http.Client
	// sleep waits before a retry (sleepCtx; tests record the waits instead).
	sleep func(ctx context.Context, d time.Duration) error
}

// sleepCtx waits d, or less if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// publish sends ev, with key as its Idempotency-Key when not empty. A 503
// with Retry-After means the replica took nothing (it is draining or
// holding publishers back), so it is retried after the wait it asks for,
// at most p.retries times.
func (p *pubClient) publish(ctx context.Context, ev pubEvent, key string) (pubAnswer, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return pubAnswer{}, err
	}
	if key != "" {
		if err := checkIdempotencyKey(key); err != nil {
			return pubAnswer{}, err
		}
	}
	for attempt := 0; ; attempt++ {
		ans, wait, err := p.post(ctx, body, key)
		if wait < 0 || attempt >= p.retries {
			return ans, err
		}
		if serr := p.sleep(ctx, wait); serr != nil {
			return pubAnswer{}, fmt.Errorf("%w (while waiting to retry: %w)", err, serr)
		}
	}
}

// pubAnswer is a replica's answer to a publish.
type pubAnswer struct {
	Accepted  int    `json:"accepted"`
	Origin    string `json:"origin"`
	First     uint64 `json:"first"`
	Last      uint64 `json:"last"`
	Duplicate bool   `json:"duplicate"`
}

// pubSummary is what a run of sser pub published, told at the end.
type pubSummary struct {
	events, dups int
	origin       string
	first, last  uint64
}

func (s *pubSummary) add(a pubAnswer) {
	if a.Accepted == 0 {
		return
	}
	if a.Duplicate {
		s.dups += a.Accepted
		return
	}
	if s.events == 0 || a.Origin != s.origin {
		s.origin, s.first = a.Origin, a.First
	}
	s.events += a.Accepted
	s.last = a.Last
}

func (s *pubSummary) print(w io.Writer, stream string) {
	if s.events == 0 && s.dups == 0 {
		return
	}
	switch {
	case s.events == 1:
		fmt.Fprintf(w, "published 1 event to stream %s (origin %s, seq %d)\n", stream, s.origin, s.first)
	case s.events > 1:
		fmt.Fprintf(w, "published %d events to stream %s (origin %s, seqs %d-%d)\n", s.events, stream, s.origin, s.first, s.last)
	}
	if s.dups > 0 {
		fmt.Fprintf(w, "%d already published with the same idempotency key: not published again\n", s.dups)
	}
}

// post makes one attempt. When the answer may be retried (503 with
// Retry-After), wait is how long to wait first; otherwise it is negative.
func (p *pubClient) post(ctx context.Context, body []byte, key string) (ans pubAnswer, wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return ans, -1, err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return ans, -1, fmt.Errorf("publish to %s: %w", p.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		_ = json.Unmarshal(b, &ans)
		return ans, -1, nil
	}
	wait = -1
	if resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			wait = min(d, pubMaxRetryAfter)
		}
	}
	reason := strings.TrimSpace(string(b))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		reason = e.Error
	}
	if reason == "" {
		reason = "(no reason given)"
	}
	return ans, wait, fmt.Errorf("publish to %s: %s: %s", p.url, resp.Status, reason)
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
