package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// publisher posts events to the replicas' publish endpoints over
// keep-alive connections.
type publisher struct {
	client  *http.Client
	urls    []string // publish URL of each replica
	payload int

	retried    atomic.Int64 // 503/429 answers waited out and retried
	failed     atomic.Int64 // events given up (other answers, transport errors)
	errMu      sync.Mutex
	firstError string
}

func newPublisher(m *mesh, payload, workers int) *publisher {
	tr := &http.Transport{
		MaxIdleConns:        workers * len(m.replicas),
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	p := &publisher{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, payload: payload}
	for _, r := range m.replicas {
		p.urls = append(p.urls, r.internalURL+"/api/json/v1/publish")
	}
	return p
}

func (p *publisher) close() { p.client.CloseIdleConnections() }

// body is the JSON publish request for event seq: the message is
// "<seq> <unix-nanos> xxx…", padded to the payload size, the time taken now.
func (p *publisher) body(buf []byte, seq int) []byte {
	buf = append(buf[:0], `{"stream":"`+benchStream+`","msg":"`...)
	start := len(buf)
	buf = strconv.AppendInt(buf, int64(seq), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
	buf = append(buf, ' ')
	for len(buf)-start < p.payload {
		buf = append(buf, 'x')
	}
	return append(buf, `"}`...)
}

// publish sends event seq to replica i, waiting out and retrying 503 and
// 429 answers (after their Retry-After) until ctx ends. It reports whether
// the event was accepted.
func (p *publisher) publish(ctx context.Context, i, seq int, buf *[]byte) bool {
	for ctx.Err() == nil {
		*buf = p.body(*buf, seq)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.urls[i], bytes.NewReader(*buf))
		if err != nil {
			p.fail(err.Error())
			return false
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := p.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				p.fail(fmt.Sprintf("replica %d: %v", i, err))
			}
			return false
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			return true
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			p.retried.Add(1)
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		default:
			p.fail(fmt.Sprintf("replica %d: %s: %s", i, resp.Status, bytes.TrimSpace(msg)))
			return false
		}
	}
	return false
}

// firstErr is the first failure's message, "" when none.
func (p *publisher) firstErr() string {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.firstError
}

func (p *publisher) fail(msg string) {
	p.failed.Add(1)
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.firstError == "" {
		p.firstError = msg
	}
}

// run publishes events 1..n at rate events/s in total, event seq to
// replica (seq-1) mod N, from workers goroutines fed by one pacer. When
// the workers fall behind, the pace slips rather than bursting. It stops
// early when ctx ends, and returns which events were accepted.
func (p *publisher) run(ctx context.Context, n int, rate float64, workers int) []bool {
	accepted := make([]bool, n+1)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var buf []byte
			for seq := range jobs {
				accepted[seq] = p.publish(ctx, (seq-1)%len(p.urls), seq, &buf)
			}
		})
	}
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
pace:
	for seq := 1; seq <= n; seq++ {
		due := start.Add(time.Duration(float64(seq-1) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				break pace
			case <-t.C:
			}
		}
		select {
		case <-ctx.Done():
			break pace
		case jobs <- seq:
		}
	}
	close(jobs)
	wg.Wait()
	return accepted
}
