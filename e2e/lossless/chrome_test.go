package lossless

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser's viewport, and so the size of every screenshot.
const (
	screenWidth  = 1280
	screenHeight = 1000
)

// browserTab starts headless Chromium (found as findChromium finds it)
// driven over the DevTools protocol, and returns a context for its one tab.
// The browser is stopped on cleanup.
func browserTab(t *testing.T) context.Context {
	t.Helper()
	bin := findChromium(t)
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(screenWidth, screenHeight), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("force-device-scale-factor", "1"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), opts...)
	tab, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first run starts the browser, which lives as long as tab; the
	// viewport is then set, so that screenshots have a known size.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	browse(t, tab, "set the viewport", chromedp.EmulateViewport(screenWidth, screenHeight))
	return tab
}

// browse runs action on the tab with a bound on how long it may take.
func browse[T any](t *testing.T, tab context.Context, what string, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// domJSON evaluates expr, which must give a JSON string, into v.
func domJSON(t *testing.T, tab context.Context, expr string, v any) {
	t.Helper()
	s := browse(t, tab, "evaluate "+expr, chromedp.Evaluate[string]("JSON.stringify("+expr+")"))
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("browser: %s gave %q: %v", expr, s, err)
	}
}

// screenshot takes a PNG of the window, checks that it is a real picture
// of a page (it decodes, has the window's size, and is not blank), saves
// it in the test's temporary directory (and in $SSER_ARTIFACTS when set)
// and returns it.
func screenshot(t *testing.T, tab context.Context, name string) image.Image {
	t.Helper()
	b := browse(t, tab, "screenshot "+name, chromedp.CaptureScreenshot())
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	if got := img.Bounds().Size(); got != image.Pt(screenWidth, screenHeight) {
		t.Errorf("screenshot %s is %v, want %dx%d", name, got, screenWidth, screenHeight)
	}
	// A page with text, tables and charts has many colours, and no one
	// colour covers all of it.
	colours := map[uint32]int{}
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[(r>>8)<<16|(g>>8)<<8|b>>8]++
		}
	}
	most, total := 0, (bounds.Dx()/2)*(bounds.Dy()/2)
	for _, n := range colours {
		most = max(most, n)
	}
	if len(colours) < 32 || most > total*98/100 {
		t.Errorf("screenshot %s looks blank: %d colours, the commonest on %d%% of it", name, len(colours), most*100/total)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("SSER_ARTIFACTS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, t.Name()+"-"+name+".png")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Errorf("save screenshot: %v", err)
			continue
		}
		t.Logf("screenshot %s: %s (%d colours)", name, p, len(colours))
	}
	return img
}

// pixelsNear counts the pixels of img within tol of the colour c.
func pixelsNear(img image.Image, c [3]int, tol int) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if abs(int(r>>8)-c[0]) <= tol && abs(int(g>>8)-c[1]) <= tol && abs(int(bl>>8)-c[2]) <= tol {
				n++
			}
		}
	}
	return n
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
