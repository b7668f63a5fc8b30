package leveret_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDesignNamesExist keeps DESIGN.md true as code moves (issue 23, §4):
// every Go file it names must exist, and every Go name it puts in code
// quotes (`Type.Method`, `funcName`, `pkg.Name(...)`) must still occur in
// the sources, as a whole word. A rename or a removal that leaves the
// document behind fails here.
func TestDesignNamesExist(t *testing.T) {
	doc, err := os.ReadFile("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	var sources strings.Builder
	files := map[string]bool{}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "results") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			files[path], files[filepath.Base(path)] = true, true
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sources.Write(b)
			sources.WriteByte('\n')
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	words := map[string]bool{}
	for _, w := range regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`).FindAllString(sources.String(), -1) {
		words[w] = true
	}
	quoted := regexp.MustCompile("`([^`\n]+)`")
	goName := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\(.*\))?$`)
	// Named on purpose although not in the sources: the standard
	// library's, and what DESIGN.md says leveret does not have.
	checked := map[string]bool{"iter.Seq": true, "Channel.Flow": true}
	for _, m := range quoted.FindAllStringSubmatch(string(doc), -1) {
		span := m[1]
		if checked[span] {
			continue
		}
		checked[span] = true
		switch {
		case strings.HasSuffix(span, ".go"):
			if !files[span] && !files[filepath.Base(span)] && !anyMatch(files, span) {
				t.Errorf("DESIGN.md names %s, which does not exist", span)
			}
		case goName.MatchString(span):
			name := span
			if i := strings.IndexByte(name, '('); i >= 0 {
				name = name[:i]
			}
			last := name[strings.LastIndexByte(name, '.')+1:]
			if !words[last] {
				t.Errorf("DESIGN.md names %s, but no Go source has %s", span, last)
			}
		}
	}
	if len(checked) < 100 { // the spans seen, the two named on purpose included
		t.Fatalf("only %d quoted spans found in DESIGN.md: is it the right file?", len(checked))
	}
}

// anyMatch reports whether a file matches the glob pattern (hostile_*_test.go).
func anyMatch(files map[string]bool, pattern string) bool {
	for f := range files {
		if ok, _ := filepath.Match(pattern, f); ok {
			return true
		}
	}
	return false
}

// The packages table's "may import" column, checked: no internal package
// imports the root, and each imports only the leveret packages listed.
func TestInternalImports(t *testing.T) {
	const module = "github.com/leveret-mq/leveret"
	allowed := map[string][]string{
		"internal/pool":       {"internal/session", "internal/topology", "internal/mux", "internal/proto", "ops"},
		"internal/topology":   {"internal/session", "internal/mux", "internal/proto", "ops"},
		"internal/session":    {"internal/mux", "ops"},
		"internal/mux":        {"internal/proto", "ops"},
		"internal/proto":      {"ops"},
		"internal/fakeserver": {"internal/proto", "ops"},
	}
	for dir, may := range allowed {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				if path != module && !strings.HasPrefix(path, module+"/") {
					continue
				}
				if rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/"); !slices.Contains(may, rel) {
					t.Errorf("%s imports %s, which DESIGN.md's package table does not allow", f, path)
				}
			}
		}
	}
}
