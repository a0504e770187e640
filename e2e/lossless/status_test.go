package lossless

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// statusPeerRows reads the peers the status page lists, in its order.
type statusPeerRow struct {
	Addr, State, Class, Background string
}

func statusPeers(t *testing.T, tab context.Context) (state string, rows []statusPeerRow) {
	t.Helper()
	var v struct {
		State string
		Rows  []statusPeerRow
	}
	domJSON(t, tab, `{State: document.body.dataset.state, Rows: [...document.querySelectorAll('tr[data-peer]')].map((tr) => ({
		Addr: tr.dataset.peer, State: tr.dataset.state, Class: tr.className,
		Background: getComputedStyle(tr.querySelector('td')).backgroundColor}))}`, &v)
	return v.State, v.Rows
}

// The status page of replica 0 lists both peers up; when replica 2 is
// killed, within seconds it shows replica 2 down, first and in red.
func TestBrowserStatusPageShowsADeadPeer(t *testing.T) {
	skipShort(t)
	tab := browserTab(t)
	c := newCluster(t, 3)
	c.startAll()
	publishOn(t, c, 1, "one", "two")

	browse(t, tab, "open the status page", chromedp.Navigate(c.internalURL(0)+"/status"))
	var state string
	var rows []statusPeerRow
	waitFor(t, deadline, "the status page to list both peers up", func() bool {
		state, rows = statusPeers(t, tab)
		return state == "ready" && len(rows) == 2 &&
			rows[0] == statusPeerRow{ipOf(1), "up", "up", rows[0].Background} && rows[1] == statusPeerRow{ipOf(2), "up", "up", rows[1].Background}
	}, func() string { return fmt.Sprintf("state %q, peers %+v", state, rows) })
	before := screenshot(t, tab, "before")

	if err := c.rep(2).Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 15*time.Second, "the status page to show replica 2 down", func() bool {
		_, rows = statusPeers(t, tab)
		return len(rows) == 2 && rows[0].Addr == ipOf(2) && rows[0].State == "down"
	}, func() string { return fmt.Sprintf("peers %+v", rows) })
	t.Logf("replica 2 shown down %s after it was killed", time.Since(killed).Round(10*time.Millisecond))
	if rows[0].Class != "down" || rows[0].Background != "rgb(253, 236, 234)" || rows[1] != (statusPeerRow{ipOf(1), "up", "up", rows[1].Background}) {
		t.Errorf("peers %+v: want replica 2 first on a red background, replica 1 up", rows)
	}
	var lastErr string
	domJSON(t, tab, `document.querySelector('tr[data-peer="`+ipOf(2)+`"] .err').textContent`, &lastErr)
	if lastErr == "" || lastErr == "none" {
		t.Errorf("the dead peer's row shows no error: %q", lastErr)
	}
	after := screenshot(t, tab, "after")
	// The DOWN badge is solid red (#c62828); nothing was red before.
	red := [3]int{0xc6, 0x28, 0x28}
	if b, a := pixelsNear(before, red, 8), pixelsNear(after, red, 8); b > 50 || a < 300 {
		t.Errorf("red pixels: %d before the kill, %d after; want the dead peer to show red", b, a)
	}
}
