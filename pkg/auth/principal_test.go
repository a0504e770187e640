package auth

import "testing"

func TestPrincipalAllows(t *testing.T) {
	tmpl, err := ParseTemplate("users/{sub}/*")
	if err != nil {
		t.Fatal(err)
	}
	g, ok := tmpl.Expand(map[string]any{"sub": "alice"})
	if !ok {
		t.Fatal("template did not expand")
	}
	p := &Principal{Subject: "alice", Grants: []string{g, "news", "rooms/r?"}}
	cases := []struct {
		stream string
		want   bool
	}{
		{"users/alice/inbox", true},
		{"news", true},
		{"rooms/r1", true},
		{"users/bob/inbox", false},
		{"users/Alice/inbox", false},        // case matters: another user
		{"users/alice/inbox/deeper", false}, // * stays within a segment
		{"users/alice/..", false},           // dot segments are never granted
		{"users/alice/../bob/inbox", false}, // no climbing out
		{"users/alice/.", false},            //
		{"users/alice//x", false},           // empty segment
		{"users/alice/%2F..%2Fbob", false},  // not a stream name
		{"users/alice%2Fbob/x", false},      // not a stream name
		{"users/alice", false},              // the pattern needs a segment after
		{"news2", false},                    //
		{"rooms/r12", false},                //
		{"", false},                         //
		{"users/alice/" + string(make([]byte, 130)), false},
	}
	for _, tc := range cases {
		if got := p.Allows(tc.stream); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.stream, got, tc.want)
		}
	}
	var nobody *Principal
	if nobody.Allows("news") {
		t.Error("a nil principal allows")
	}
}

func TestTemplates(t *testing.T) {
	for _, bad := range []string{"users/{sub", "users/sub}/*", "users/{}/x", "users/{a/b}/x", "users/{sub}/ x", "[/{sub}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) accepted", bad)
		}
	}
	tmpl, err := ParseTemplate("t/{tenant}/u/{sub}")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		claims map[string]any
		want   string
		ok     bool
	}{
		{map[string]any{"tenant": "acme", "sub": "alice"}, "t/acme/u/alice", true},
		{map[string]any{"tenant": "acme"}, "", false},
		{map[string]any{"tenant": "acme", "sub": ""}, "", false},
		{map[string]any{"tenant": "acme", "sub": "a/b"}, "", false},
		{map[string]any{"tenant": "acme", "sub": ".."}, "", false},
		{map[string]any{"tenant": "acme", "sub": "."}, "", false},
		{map[string]any{"tenant": "acme", "sub": "*"}, "", false},
		{map[string]any{"tenant": "acme", "sub": "a?"}, "", false},
		{map[string]any{"tenant": "acme", "sub": "[a]"}, "", false},
		{map[string]any{"tenant": "acme", "sub": "a%2Fb"}, "", false},
		{map[string]any{"tenant": "acme", "sub": []any{"x"}}, "", false},
		{map[string]any{"tenant": "a..b", "sub": "x"}, "t/a..b/u/x", true},
	}
	for _, tc := range cases {
		got, ok := tmpl.Expand(tc.claims)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("Expand(%v) = %q, %v; want %q, %v", tc.claims, got, ok, tc.want, tc.ok)
		}
	}
}
