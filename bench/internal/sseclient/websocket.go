package sseclient

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// wsKey is the handshake's Sec-WebSocket-Key: any 16 bytes in base64 do
// for a client that does not check the answer's accept value.
const wsKey = "c3NlbG9hZCBiZW5jaCBrZXk="

var (
	wsType  = []byte(`{"type":"event"`)
	wsData  = []byte(`,"data":"`)
	wsID    = []byte(`,"id":"`)
	wsEvent = []byte(`,"event":"`)
)

// readWS reads a WebSocket subscription: sser's event messages
// ({"type":"event","stream":…,"id":…,"data":…}) are recorded as SSE
// events are, pings are answered, other messages skipped. The data and id
// are cut out of the JSON by their keys, not decoded: the client's cost
// per event stays close to the SSE reader's (the events hold no escapes).
func (c *Client) readWS(target *url.URL) error {
	br := bufio.NewReaderSize(c.conn, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, URL: target})
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("status %s", resp.Status)
	}
	var hdr [8]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return err
		}
		op, n := hdr[0]&0x0f, uint64(hdr[1]&0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if n > 64<<20 {
			return fmt.Errorf("frame of %d bytes", n)
		}
		if uint64(cap(payload)) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return err
		}
		switch op {
		case 0x9: // ping: a pong with the same payload, masked with zeros
			pong := append([]byte{0x8a, 0x80 | byte(n), 0, 0, 0, 0}, payload...)
			if _, err := c.conn.Write(pong); err != nil {
				return err
			}
			continue
		case 0x8:
			return io.EOF
		case 0x1:
		default:
			continue
		}
		if !bytes.HasPrefix(payload, wsType) {
			continue
		}
		frame := len(payload) + 2
		if n >= 126 {
			frame += 2
		}
		if bytes.Contains(payload, wsEvent) {
			c.Typed++
			continue
		}
		if v := cutString(payload, wsID); v != nil {
			c.lastID = append(c.lastID[:0], v...)
		}
		data := cutString(payload, wsData)
		if data == nil {
			return fmt.Errorf("event message without data: %.80q", payload)
		}
		measured, err := c.record(data)
		if err != nil {
			return fmt.Errorf("malformed data %.80q", data)
		}
		if measured {
			c.FrameBytes += int64(frame)
			c.IDBytes += int64(len(c.lastID))
		}
	}
}

// cutString is the JSON string value after key, without its quotes; nil
// when key is absent.
func cutString(b, key []byte) []byte {
	i := bytes.Index(b, key)
	if i < 0 {
		return nil
	}
	v := b[i+len(key):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return nil
}
