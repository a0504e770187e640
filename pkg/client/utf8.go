package client

import "unicode/utf8"

// decodeUTF8 decodes b with the WHATWG Encoding Standard's UTF-8 decoder:
// each maximal invalid subsequence becomes one U+FFFD. (Go's range loop and
// strings.ToValidUTF8 replace invalid bytes differently, so browsers and this
// client would disagree on what a broken event says.) Line ends are ASCII and
// never continuation bytes, so decoding line by line gives the same result
// as decoding the whole stream.
func decodeUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < 0x80 {
			out = append(out, c)
			i++
			continue
		}
		need := 0
		lower, upper := byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c >= 0xE0 && c <= 0xEF:
			need = 2
			if c == 0xE0 {
				lower = 0xA0
			} else if c == 0xED {
				upper = 0x9F
			}
		case c >= 0xF0 && c <= 0xF4:
			need = 3
			if c == 0xF0 {
				lower = 0x90
			} else if c == 0xF4 {
				upper = 0x8F
			}
		default:
			out = utf8.AppendRune(out, utf8.RuneError)
			i++
			continue
		}
		j := i + 1
		for k := 0; k < need; k++ {
			if j >= len(b) || b[j] < lower || b[j] > upper {
				break
			}
			lower, upper = 0x80, 0xBF
			j++
		}
		if j-i != need+1 {
			// The byte at j (if any) is not consumed: it starts the next
			// sequence.
			out = utf8.AppendRune(out, utf8.RuneError)
			i = j
			continue
		}
		out = append(out, b[i:j]...)
		i = j
	}
	return out
}
