// Package sseclient is the subscriber side shared by the bench tools: a raw
// TCP SSE client that timestamps every event it reads, and a latency
// histogram.
package sseclient

import (
	"math/bits"
	"time"
)

// Histogram is a log-linear latency histogram in microseconds: exact below
// 64µs, then 32 buckets per power of two (about 3% resolution). Each client
// owns one, so recording needs no lock; they are merged at the end.
type Histogram struct {
	counts []uint64
	n      uint64
	max    time.Duration
}

const (
	histLinear = 64
	histSub    = 32
	histSize   = histLinear + 40*histSub
)

// Record adds one sample.
func (h *Histogram) Record(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, histSize)
	}
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d/time.Microsecond))]++
	h.n++
	h.max = max(h.max, d)
}

func histIndex(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	msb := bits.Len64(us) - 1 // >= 6
	shift := msb - 5
	i := histLinear + (msb-6)*histSub + int((us>>shift)&(histSub-1))
	return min(i, histSize-1)
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	if i < histLinear {
		return float64(i) + 0.5
	}
	k := i - histLinear
	msb := k/histSub + 6
	shift := msb - 5
	low := uint64(histSub+k%histSub) << shift
	return float64(low) + float64(uint64(1)<<shift)/2
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.counts == nil {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, histSize)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Quantile is the q-th quantile (0..1) in milliseconds, 0 when empty.
func (h *Histogram) Quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if rank >= h.n {
		rank = h.n - 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			return histValue(i) / 1000
		}
	}
	return float64(h.max) / float64(time.Millisecond)
}

// N is the number of samples.
func (h *Histogram) N() uint64 { return h.n }

// MaxMs is the largest sample in milliseconds.
func (h *Histogram) MaxMs() float64 { return float64(h.max) / float64(time.Millisecond) }
