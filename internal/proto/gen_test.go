package proto

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	// The generator reads the spec XML from the amqp091-go module; this
	// import keeps the module in go.mod through go mod tidy.
	_ "github.com/rabbitmq/amqp091-go"
)

// TestGeneratedUpToDate runs the generator into a temporary directory and
// fails if its output differs from the committed files.
func TestGeneratedUpToDate(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command("go", "run", "./gen", "-out", out)
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, "go run ./gen: %s", got)
	for _, name := range []string{"methods_gen.go", "constants_gen.go"} {
		want, err := os.ReadFile(name)
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		if line, w, g, differ := firstDiff(string(want), string(got)); differ {
			t.Errorf("%s is stale (run go generate ./internal/proto); line %d:\ncommitted: %q\ngenerated: %q", name, line, w, g)
		}
	}
}

// firstDiff returns the first line (1-based) where a and b differ.
func firstDiff(a, b string) (line int, la, lb string, differ bool) {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(as), len(bs)) {
		la, lb = "<end of file>", "<end of file>"
		if i < len(as) {
			la = as[i]
		}
		if i < len(bs) {
			lb = bs[i]
		}
		if la != lb {
			return i + 1, la, lb, true
		}
	}
	return 0, "", "", false
}
