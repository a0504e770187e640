// Package csp builds the Content-Security-Policy of sser's self-contained
// pages (the status page, the playground).
package csp

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
)

// Inline is a Content-Security-Policy for a page whose only style and
// script are its inline <style> and <script> elements: they are allowed by
// hash; other requests may go to the page's own origin only.
func Inline(page []byte) string {
	hash := func(open, end string) string {
		_, rest, ok := bytes.Cut(page, []byte(open))
		if !ok {
			return "'none'"
		}
		body, _, ok := bytes.Cut(rest, []byte(end))
		if !ok {
			return "'none'"
		}
		sum := sha256.Sum256(body)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + hash("<script>", "</script>") + "; style-src " + hash("<style>", "</style>") +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
