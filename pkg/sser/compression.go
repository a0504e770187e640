package sser

import (
	"encoding/binary"
	"hash/crc32"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
)

// Compression of SSE responses (Options.Compression).
//
// A gzip stream per connection, flushed with every write, costs the usual
// way one compressor per connection: about 800 KiB each (measured for
// compress/gzip and klauspost/compress alike), and compressing every frame
// once per subscriber. Neither fits a server whose idle connection costs
// 1.3 KiB and whose frames are encoded once for all subscribers. So the
// frames are compressed once too:
//
//   - Each event's frame is deflated once, as it is fanned out to a stream
//     with compressed subscribers (else when first wanted), with the
//     stream's previous frame as the
//     dictionary (repetitive events, JSON with the same keys, find most of
//     their bytes there), and flushed so that it ends on a byte. Every
//     connection whose last written frame is that previous one writes
//     these same bytes: its inflater's window ends with that frame, so
//     every back-reference lands where the encoder saw it.
//   - Anything else (the connect preamble and replay, heartbeats, notices,
//     frames re-encoded for one subscriber, subscribers of several
//     streams, the first frame after any of those) is deflated for that
//     connection alone, with its last written frame as the dictionary.
//
// A compressed connection then holds its gzip state (gzConn: CRC, size, a
// reference to the last frame it wrote, the entries beside its queue: 96
// bytes) and no compressor. The deflaters are a small pool shared by the
// server's writers. BenchmarkGzipEncode: a frame written through its shared
// deflate costs about 0.1 µs, deflated alone about 13 µs.

// Compression values of Options.Compression.
const (
	// CompressionOff never compresses SSE responses (the default).
	CompressionOff = "off"
	// CompressionGzip compresses SSE responses with gzip for clients that
	// send Accept-Encoding: gzip.
	CompressionGzip = "gzip"
)

// deflateLevel is the klauspost/compress level of every deflate here.
// Levels 1-6 look for no match at all in a flush of less than 128 bytes
// (Huffman codes only), so a 108-byte JSON event came out at 118 bytes;
// level 7 finds the previous event in the dictionary and made it 15 bytes
// (a 182-byte one 58, as levels 5-9 did). It costs 10-20 µs a deflate,
// most of it clearing the hash table, once per event.
const deflateLevel = 7

// acceptsGzip reports whether an Accept-Encoding header value accepts gzip:
// gzip (or x-gzip) or * with a q-value above 0, and gzip not refused by
// name. A coding named twice takes its lower q.
func acceptsGzip(header string) bool {
	gzip, star := -1.0, -1.0 // q of each, -1 when not named
	for len(header) > 0 {
		var item string
		item, header, _ = strings.Cut(header, ",")
		coding, params, _ := strings.Cut(item, ";")
		q := 1.0
		for params != "" {
			var p string
			p, params, _ = strings.Cut(params, ";")
			k, v, _ := strings.Cut(p, "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0 // a q that does not parse accepts nothing
				}
				q = f
			}
		}
		switch c := strings.TrimSpace(coding); {
		case strings.EqualFold(c, "gzip"), strings.EqualFold(c, "x-gzip"):
			gzip = lower(gzip, q)
		case c == "*":
			star = lower(star, q)
		}
	}
	if gzip >= 0 {
		return gzip > 0
	}
	return star > 0
}

// maxDistance is the furthest back a deflate back-reference reaches.
const maxDistance = 32 << 10

// lower is the lower of a q-value so far (-1: none yet) and q.
func lower(sofar, q float64) float64 {
	if sofar < 0 {
		return q
	}
	return min(sofar, q)
}

// gzipHeader starts every gzip stream: deflate, no name, no time, OS unknown.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// gzipEnd is a final empty fixed-Huffman block: the deflate stream ends.
var gzipEnd = []byte{0x03, 0x00}

// gzShared is an event's frame deflated once for every compressed
// connection whose last written frame is prev.
type gzShared struct {
	prev []byte // the stream's frame before this one (the dictionary)
	once sync.Once
	z    []byte
}

// bytes is frame deflated with prev as the dictionary, made on first use.
func (g *gzShared) bytes(frame []byte) []byte {
	g.once.Do(func() { g.z = deflateFrames(nil, g.prev, [][]byte{frame}) })
	return g.z
}

// gzStream is one connection's gzip stream. Not safe for concurrent use:
// the connection's one writer owns it.
type gzStream struct {
	started bool
	crc     uint32
	size    uint32 // of the plaintext, modulo 2^32
	// last is the last frame written: the bytes the client's inflater
	// holds last, shared with the frame's other readers (never copied).
	last []byte
}

// encode appends frames to dst as gzip bytes that the client can inflate
// completely (the deflate stream is flushed). ents, when not nil, holds
// each frame's history entry (nil for frames of no event): where the entry's
// shared deflate fits this connection, its bytes are used.
func (z *gzStream) encode(dst []byte, frames [][]byte, ents []*histEntry) []byte {
	if !z.started {
		dst = append(dst, gzipHeader...)
		z.started = true
	}
	runStart, runDict := -1, []byte(nil)
	last := z.last
	for i, f := range frames {
		if len(f) == 0 {
			continue
		}
		var e *histEntry
		if i < len(ents) {
			e = ents[i]
		}
		if e != nil && e.gz != nil && sameBytes(f, e.frame) && sameBytes(last, e.gz.prev) {
			if runStart >= 0 {
				dst = deflateFrames(dst, runDict, frames[runStart:i])
				runStart = -1
			}
			dst = append(dst, e.gz.bytes(f)...)
		} else if runStart < 0 {
			runStart, runDict = i, last
		}
		z.crc = crc32.Update(z.crc, crc32.IEEETable, f)
		z.size += uint32(len(f))
		last = f
	}
	if runStart >= 0 {
		dst = deflateFrames(dst, runDict, frames[runStart:])
	}
	z.last = last
	return dst
}

// encodeBatch is encode (then end, with last) into the pooled buffer bp,
// which keeps what it grew to; the result is valid until bp goes back to
// batchPool.
func (z *gzStream) encodeBatch(bp *[]byte, frames [][]byte, ents []*histEntry, last bool) []byte {
	b := z.encode((*bp)[:0], frames, ents)
	if last {
		b = z.end(b)
	}
	if cap(b) <= maxPooledBatch {
		*bp = b[:0]
	}
	return b
}

// end appends what ends the gzip stream: the final block and the trailer.
func (z *gzStream) end(dst []byte) []byte {
	if !z.started {
		dst = append(dst, gzipHeader...)
		z.started = true
	}
	dst = append(dst, gzipEnd...)
	dst = binary.LittleEndian.AppendUint32(dst, z.crc)
	return binary.LittleEndian.AppendUint32(dst, z.size)
}

// sameBytes reports whether a and b are the same bytes in memory, not
// merely equal: a frame shared with history is recognised by identity.
func sameBytes(a, b []byte) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// deflateFrames appends frames deflated as one flushed run, with dict as
// the bytes that precede them.
func deflateFrames(dst, dict []byte, frames [][]byte) []byte {
	if len(dict) > maxDistance {
		dict = dict[len(dict)-maxDistance:] // no back-reference reaches further
	}
	w := deflaters.get()
	defer deflaters.put(w)
	out := appendWriter{dst}
	w.ResetDict(&out, dict)
	for _, f := range frames {
		_, _ = w.Write(f) // appendWriter never fails
	}
	_ = w.Flush()
	w.ResetDict(nil, nil) // hold on to neither the output nor the dictionary
	return out.b
}

// deflaterPool bounds the deflaters in use (about 1 MiB each at level 7)
// however many writers compress at once: a writer waits for a turn rather
// than making more than its size. Deflaters not in use are a sync.Pool's,
// so a server that stops compressing gives them back to the GC.
type deflaterPool struct {
	turns chan struct{}
	idle  sync.Pool
}

var deflaters = newDeflaterPool(max(4, runtime.GOMAXPROCS(0)))

func newDeflaterPool(n int) *deflaterPool {
	return &deflaterPool{turns: make(chan struct{}, n)}
}

func (p *deflaterPool) get() *flate.Writer {
	p.turns <- struct{}{}
	if w, ok := p.idle.Get().(*flate.Writer); ok {
		return w
	}
	w, err := flate.NewWriter(nil, deflateLevel)
	if err != nil {
		panic(err) // a constant, valid level
	}
	return w
}

func (p *deflaterPool) put(w *flate.Writer) {
	p.idle.Put(w)
	<-p.turns
}
