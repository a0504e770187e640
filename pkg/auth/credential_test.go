package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestFromRequest(t *testing.T) {
	big := strings.Repeat("a", MaxCredentialBytes+1)
	cases := []struct {
		name   string
		target string
		header []string
		cookie []string
		want   Credential
		err    error
	}{
		{name: "none", target: "/events?stream=a", err: ErrNoCredential},
		{name: "bearer", target: "/events", header: []string{"Bearer abc"}, want: Credential{"header", "abc"}},
		{name: "bearer lower case", target: "/events", header: []string{"bearer abc"}, want: Credential{"header", "abc"}},
		{name: "bearer wins over query", target: "/events?ticket=q", header: []string{"Bearer h"}, want: Credential{"header", "h"}},
		{name: "basic", target: "/events", header: []string{"Basic abc"}, err: ErrInvalidCredential},
		{name: "two headers", target: "/events", header: []string{"Bearer a", "Bearer b"}, err: ErrInvalidCredential},
		{name: "empty bearer", target: "/events", header: []string{"Bearer "}, err: ErrInvalidCredential},
		{name: "ticket", target: "/events?stream=a&ticket=t1.x.y", want: Credential{"ticket", "t1.x.y"}},
		{name: "escaped ticket name", target: "/events?%74icket=t1.x.y", want: Credential{"ticket", "t1.x.y"}},
		{name: "access_token", target: "/events?access_token=eyJ.a.b", want: Credential{"access_token", "eyJ.a.b"}},
		{name: "ticket twice", target: "/events?ticket=a&ticket=b", err: ErrInvalidCredential},
		{name: "empty ticket", target: "/events?ticket=", err: ErrInvalidCredential},
		{name: "oversized", target: "/events?ticket=" + big, err: ErrInvalidCredential},
		{name: "cookie", target: "/events", cookie: []string{"sser_token=c"}, want: Credential{"cookie", "c"}},
		{name: "query wins over cookie", target: "/events?ticket=q", cookie: []string{"sser_token=c"}, want: Credential{"ticket", "q"}},
		{name: "cookie twice", target: "/events", cookie: []string{"sser_token=a; sser_token=b"}, err: ErrInvalidCredential},
		{name: "other cookie", target: "/events", cookie: []string{"session=a"}, err: ErrNoCredential},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			for _, h := range tc.header {
				r.Header.Add("Authorization", h)
			}
			for _, c := range tc.cookie {
				r.Header.Add("Cookie", c)
			}
			got, err := FromRequest(r, DefaultCookieName)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FromRequest = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"":                                  "",
		"stream=a":                          "stream=a",
		"stream=a&ticket=t1.SECRET.x":       "stream=a&ticket=REDACTED",
		"access_token=SECRET&stream=b":      "access_token=REDACTED&stream=b",
		"%74icket=SECRET":                   "%74icket=REDACTED",
		"ticket=SECRET;x=1":                 "ticket=REDACTED",
		"a=1;ticket=SECRET":                 "a=REDACTED",
		"ticket":                            "ticket=REDACTED",
		"bad%zz=SECRET":                     "REDACTED",
		"stream=x&lastEventID=k.1&ticket=S": "stream=x&lastEventID=k.1&ticket=REDACTED",
	}
	for in, want := range cases {
		if got := RedactQuery(in); got != want {
			t.Errorf("RedactQuery(%q) = %q, want %q", in, got, want)
		}
	}
	u, _ := url.Parse("http://user:SECRET@h/events?stream=a&access_token=SECRET")
	if got := RedactURL(u); strings.Contains(got, "SECRET") || !strings.Contains(got, "stream=a") {
		t.Errorf("RedactURL = %q", got)
	}
}
