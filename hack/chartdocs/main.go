// Command chartdocs writes the values table of a Helm chart's README from
// the chart's values.yaml and values.schema.json, so the table cannot drift
// from the values it documents (make chart-docs; make verify runs it with
// -check).
//
// A key is documented by the comment block right above it that starts with
// "# -- " (the helm-docs convention; further "#" lines continue it). Each
// documented key is a row: its dotted path, its type from the schema, its
// default from values.yaml and the comment. A map whose keys are documented
// one by one gets a row of its own only when it has a comment, and then no
// default. Every value must be documented, itself or through a map holding
// it, or chartdocs fails.
//
// Usage:
//
//	chartdocs [-check] [-chart charts/sser]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// The table sits between these two lines of the README.
const (
	beginMarker = "<!-- values table: generated from values.yaml by `make chart-docs`; do not edit -->"
	endMarker   = "<!-- end of values table -->"
)

var errStale = errors.New("chartdocs: the values table is stale: run make chart-docs")

func main() {
	check := flag.Bool("check", false, "fail when the README's table differs from what values.yaml gives, instead of writing it")
	chart := flag.String("chart", "charts/sser", "chart directory (values.yaml, values.schema.json, README.md)")
	flag.Parse()
	if err := run(*chart, *check); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(chart string, check bool) error {
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return err
	}
	schema, err := os.ReadFile(filepath.Join(chart, "values.schema.json"))
	if err != nil {
		return err
	}
	readmePath := filepath.Join(chart, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	table, err := Table(values, schema)
	if err != nil {
		return err
	}
	updated, err := Splice(readme, table)
	if err != nil {
		return fmt.Errorf("%s: %w", readmePath, err)
	}
	if bytes.Equal(updated, readme) {
		return nil
	}
	if check {
		return fmt.Errorf("%s: %w", readmePath, errStale)
	}
	return os.WriteFile(readmePath, updated, 0o644)
}

// Row is one documented key.
type Row struct {
	Path        []string
	Description string
}

// Key is the dotted path of the row.
func (r Row) Key() string { return strings.Join(r.Path, ".") }

var keyLine = regexp.MustCompile(`^( *)([A-Za-z0-9_.-]+|"[^"]+"):(\s|$)`)

// Rows reads the documented keys of a values.yaml in file order.
func Rows(values []byte) ([]Row, error) {
	type level struct {
		indent int
		key    string
		list   bool
	}
	var (
		stack   []level
		rows    []Row
		pending []string
		inDoc   bool
	)
	for n, line := range strings.Split(string(values), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			pending, inDoc = nil, false
			continue
		case trimmed == "# --" || strings.HasPrefix(trimmed, "# -- "):
			pending, inDoc = []string{strings.TrimSpace(strings.TrimPrefix(trimmed, "# --"))}, true
			continue
		case strings.HasPrefix(trimmed, "#"):
			if inDoc {
				pending = append(pending, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
			}
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		doc := strings.Join(pending, " ")
		pending, inDoc = nil, false
		if len(stack) > 0 && stack[len(stack)-1].list {
			continue // inside a list item: part of a default, not a key
		}
		if trimmed == "-" || strings.HasPrefix(trimmed, "- ") {
			stack = append(stack, level{indent: indent, list: true})
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("values.yaml line %d: not a key: %q", n+1, line)
		}
		key := strings.Trim(m[2], `"`)
		var path []string
		for _, l := range stack {
			path = append(path, l.key)
		}
		path = append(path, key)
		stack = append(stack, level{indent: indent, key: key})
		if doc != "" {
			rows = append(rows, Row{Path: path, Description: doc})
		}
	}
	return rows, nil
}

// Table renders the Markdown table of values.yaml's documented keys, with
// types from schema.
func Table(values, schema []byte) (string, error) {
	rows, err := Rows(values)
	if err != nil {
		return "", err
	}
	var defaults map[string]any
	if err := yaml.Unmarshal(values, &defaults); err != nil {
		return "", fmt.Errorf("values.yaml: %w", err)
	}
	var root map[string]any
	if err := json.Unmarshal(schema, &root); err != nil {
		return "", fmt.Errorf("values.schema.json: %w", err)
	}
	documented := map[string]bool{}
	for _, r := range rows {
		documented[r.Key()] = true
	}
	if missing := undocumented(defaults, nil, documented); len(missing) > 0 {
		return "", fmt.Errorf("values.yaml: no \"# --\" comment documents %s (nor a map holding it)", strings.Join(missing, ", "))
	}

	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n")
	for _, r := range rows {
		value, ok := lookup(defaults, r.Path)
		if !ok {
			return "", fmt.Errorf("values.yaml: %s is documented but has no value", r.Key())
		}
		def := ""
		if !hasDocumentedChild(r.Key(), rows) {
			data, err := json.Marshal(value)
			if err != nil {
				return "", err
			}
			def = "`" + cell(string(data)) + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.Key(), cell(schemaType(root, r.Path, value)), def, cell(text(r.Description)))
	}
	return b.String(), nil
}

// Splice puts table between the markers of readme.
func Splice(readme []byte, table string) ([]byte, error) {
	s := string(readme)
	begin := strings.Index(s, beginMarker)
	end := strings.Index(s, endMarker)
	if begin < 0 || end < begin {
		return nil, fmt.Errorf("no %q ... %q lines to put the table between", beginMarker, endMarker)
	}
	return []byte(s[:begin+len(beginMarker)] + "\n\n" + table + "\n" + s[end:]), nil
}

// undocumented lists the leaves of v under path that neither they nor a map
// holding them document.
func undocumented(v any, path []string, documented map[string]bool) []string {
	if documented[strings.Join(path, ".")] {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		if len(path) == 0 {
			return nil
		}
		return []string{strings.Join(path, ".")}
	}
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, undocumented(m[k], append(slices.Clone(path), k), documented)...)
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func lookup(v any, path []string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func hasDocumentedChild(key string, rows []Row) bool {
	return slices.ContainsFunc(rows, func(r Row) bool { return strings.HasPrefix(r.Key(), key+".") })
}

// schemaType describes the schema of path: its type (or types), or the
// values an enum allows; else the type of the default.
func schemaType(root map[string]any, path []string, value any) string {
	node := root
	for _, k := range path {
		props, _ := resolve(root, node)["properties"].(map[string]any)
		next, ok := props[k].(map[string]any)
		if !ok {
			return goType(value)
		}
		node = next
	}
	if t := describe(root, node); t != "" {
		return t
	}
	return goType(value)
}

func resolve(root, node map[string]any) map[string]any {
	for range 10 {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		def, ok := lookup(root, strings.Split(strings.TrimPrefix(ref, "#/"), "/"))
		if m, isMap := def.(map[string]any); ok && isMap {
			node = m
			continue
		}
		return node
	}
	return node
}

func describe(root, node map[string]any) string {
	node = resolve(root, node)
	if enum, ok := node["enum"].([]any); ok {
		var vals []string
		for _, e := range enum {
			data, _ := json.Marshal(e)
			vals = append(vals, string(data))
		}
		return "one of " + strings.Join(vals, ", ")
	}
	var types []string
	add := func(t string) {
		if t != "" && !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	switch t := node["type"].(type) {
	case string:
		add(t)
	case []any:
		for _, x := range t {
			s, _ := x.(string)
			add(s)
		}
	}
	if _, ok := node["const"].(string); ok {
		add("string")
	}
	for _, key := range []string{"anyOf", "oneOf"} {
		branches, _ := node[key].([]any)
		for _, b := range branches {
			if m, ok := b.(map[string]any); ok {
				for _, t := range strings.Split(describe(root, m), " or ") {
					add(t)
				}
			}
		}
	}
	return strings.Join(types, " or ")
}

func goType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	default:
		return "object"
	}
}

// text makes a comment safe as Markdown text: <token> would be taken for HTML.
func text(s string) string {
	return strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(s)
}

// cell escapes what would end a table cell.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
