package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testSchema = `{
  "definitions": {
    "port": { "type": "integer" },
    "level": { "enum": ["info", "debug"] }
  },
  "properties": {
    "image": { "type": "object", "properties": { "tag": { "type": "string" } } },
    "port": { "$ref": "#/definitions/port" },
    "log": { "$ref": "#/definitions/level" },
    "rate": { "anyOf": [ { "type": "number" }, { "type": "string" } ] },
    "node": { "type": ["integer", "null"] }
  }
}`

func TestTable(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   []string // rows, in order
		err    string
	}{
		{
			name: "nested keys, types from the schema through $ref, enum and anyOf",
			values: `# Not a doc comment.
image:
  # -- Image tag.
  tag: "1.0"
# -- Listen port.
port: 8000
# -- Log level.
log: info
# -- Events per second.
rate: 0.5
# -- Node port.
node: null
`,
			want: []string{
				"| `image.tag` | string | `\"1.0\"` | Image tag. |",
				"| `port` | integer | `8000` | Listen port. |",
				"| `log` | one of \"info\", \"debug\" | `\"info\"` | Log level. |",
				"| `rate` | number or string | `0.5` | Events per second. |",
				"| `node` | integer or null | `null` | Node port. |",
			},
		},
		{
			name: "continued comment; --flag inside it; a map with documented keys has no default",
			values: `# -- The token: sent as
# "Bearer <token>" (see
# --peer-token-file).
token:
  # -- Create it.
  create: true
`,
			want: []string{
				"| `token` | object |  | The token: sent as \"Bearer &lt;token&gt;\" (see --peer-token-file). |",
				"| `token.create` | boolean | `true` | Create it. |",
			},
		},
		{
			name: "the last doc block before a key is its own; list items are defaults",
			values: `# -- A note about the section.
# -- Paths routed.
paths:
  - path: /
    pathType: Prefix
# -- After the list.
after: a|b
`,
			want: []string{
				"| `paths` | array | `[{\"path\":\"/\",\"pathType\":\"Prefix\"}]` | Paths routed. |",
				"| `after` | string | `\"a\\|b\"` | After the list. |",
			},
		},
		{
			name:   "a blank line ends a doc comment",
			values: "# -- Orphan.\n\nkey: 1\n",
			err:    "documents key",
		},
		{
			name:   "an undocumented leaf of an undocumented map",
			values: "image:\n  # -- Tag.\n  tag: x\n  pullPolicy: Always\n",
			err:    "documents image.pullPolicy",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Table([]byte(tc.values), []byte(testSchema))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(got), "\n")
			if len(lines) < 2 || !strings.HasPrefix(lines[0], "| Key | Type | Default | Description |") {
				t.Fatalf("no table header:\n%s", got)
			}
			rows := lines[2:]
			if strings.Join(rows, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestSplice(t *testing.T) {
	readme := "# Chart\n\n" + beginMarker + "\nold table\n" + endMarker + "\n\nAfter.\n"
	got, err := Splice([]byte(readme), "| new |\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Chart\n\n" + beginMarker + "\n\n| new |\n\n" + endMarker + "\n\nAfter.\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := Splice([]byte("# Chart\n"), "| new |\n"); err == nil {
		t.Error("a README without the markers: no error")
	}
}

// TestCheck: -check fails on a stale table and passes once it is written.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("values.yaml", "# -- Replicas.\nreplicaCount: 3\n")
	write("values.schema.json", `{"properties": {"replicaCount": {"type": "integer"}}}`)
	write("README.md", "# x\n"+beginMarker+"\n"+endMarker+"\n")
	if err := run(dir, true); !errors.Is(err, errStale) {
		t.Fatalf("check of a stale table: %v, want errStale", err)
	}
	if err := run(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, true); err != nil {
		t.Fatalf("check after writing: %v", err)
	}
}

// TestChartREADME: the chart's own table is up to date (as make verify checks).
func TestChartREADME(t *testing.T) {
	if err := run(filepath.Join("..", "..", "charts", "sser"), true); err != nil {
		t.Fatal(err)
	}
}
