package engine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// unescapeFolder is FolderName's inverse, written from its rule: a
// mapping with an inverse never gives two names one folder.
func unescapeFolder(t *testing.T, folder string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(folder); i++ {
		if folder[i] != '%' {
			b.WriteByte(folder[i])
			continue
		}
		if i+2 >= len(folder) {
			t.Fatalf("folder %q: a %% without two hex digits", folder)
		}
		n, err := strconv.ParseUint(folder[i+1:i+3], 16, 8)
		if err != nil {
			t.Fatalf("folder %q: %v", folder, err)
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String()
}

// "Two domains whose names map to the same folder name" cannot happen:
// FolderName is one-to-one. Every name of up to 4 characters over the
// characters a naive mapping merges ('/' and '_' and ' ', '%' and its
// escapes, '.' at the start, case of the hex digits) gets a folder of its
// own, which decodes back to the name, is one path element, and is never
// hidden, "." or "..". Case-insensitive filesystems are out of scope.
func TestFolderNameOneToOne(t *testing.T) {
	alphabet := []string{"a", "/", "_", " ", "%", "2", "F", "f", ".", "\x00", "é"}
	names, level := []string{""}, []string{""}
	for range 4 {
		var next []string
		for _, n := range level {
			for _, c := range alphabet {
				next = append(next, n+c)
			}
		}
		names, level = append(names, next...), next
	}
	seen := map[string]string{}
	for _, name := range names[1:] {
		f := FolderName(name)
		if other, ok := seen[f]; ok && other != name {
			t.Fatalf("%q and %q both map to folder %q", other, name, f)
		}
		seen[f] = name
		if back := unescapeFolder(t, f); back != name {
			t.Fatalf("folder %q of %q decodes to %q", f, name, back)
		}
		if strings.ContainsAny(f, "/\x00") || strings.HasPrefix(f, ".") || filepath.Base(f) != f {
			t.Fatalf("folder %q of %q is not one plain path element", f, name)
		}
	}
	if len(seen) != len(names)-1 {
		t.Fatalf("%d folders for %d names", len(seen), len(names)-1)
	}
}

// Domains whose names a naive mapping would merge ("a b", "a_b", "a%20b")
// are each backed up into a folder of their own in one run.
func TestBackupManyNamesKeptApart(t *testing.T) {
	names := []string{"a b", "a_b", "a%20b"}
	b := newManyBed(t, names...)
	res, err := BackupMany(context.Background(), b.conn, b.request(t, 1, names...), b.output())
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]bool{}
	for _, r := range res {
		if r.Outcome != OutcomeOK {
			t.Fatalf("%s: %v %v", r.Domain, r.Outcome, r.Err)
		}
		dirs[r.Dir] = true
	}
	want := []string{"a%20b", "a_b", "a%2520b"}
	for _, w := range want {
		if !dirs[filepath.Join(b.root, w)] {
			t.Errorf("no folder %s among %v", w, dirs)
		}
	}
	entries, _ := os.ReadDir(b.root)
	if len(entries) != 3 {
		t.Errorf("%d folders under the root, want 3", len(entries))
	}
}
