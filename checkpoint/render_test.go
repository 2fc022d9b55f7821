package checkpoint

import (
	"strings"
	"testing"
	"time"
)

// render runs the whole checkpoint-list pipeline for q and returns what
// virsh (without -q) would have written to stdout.
func render(t *testing.T, all []Node, q Query) string {
	t.Helper()
	nodes, err := Select(all, q)
	if err != nil {
		t.Fatalf("Select(%+v): %v", q, err)
	}
	var b strings.Builder
	switch {
	case q.Tree:
		err = WriteTree(&b, nodes)
	case q.Name:
		err = WriteNames(&b, nodes)
	default:
		err = WriteTable(&b, nodes, q.Parent, time.UTC)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.String() + CommandTrailer
}

func TestRenderMatchesVirsh(t *testing.T) {
	tests := []struct {
		name string
		all  []Node
		q    Query
		want string
	}{
		{"chain plain", chain(), Query{}, virshOut(
			" Name   Creation Time",
			"-----------------------------------",
			" c1     2026-11-24 19:22:45 +0000",
			" c2     2026-11-24 19:22:45 +0000",
			" c3     2026-11-24 19:22:45 +0000",
			"",
		)},
		{"chain parent", chain(), Query{Parent: true}, virshOut(
			" Name   Creation Time               Parent",
			"--------------------------------------------",
			" c1     2026-11-24 19:22:45 +0000   ",
			" c2     2026-11-24 19:22:45 +0000   c1",
			" c3     2026-11-24 19:22:45 +0000   c2",
			"",
		)},
		{"chain tree", chain(), Query{Tree: true}, virshOut(
			"c1",
			"  |",
			"  +- c2",
			"      |",
			"      +- c3",
			"        ",
			"",
		)},
		{"chain names", chain(), Query{Name: true}, virshOut(
			"c1",
			"c2",
			"c3",
			"",
		)},
		{"numeric name widens the column", append(chain()[1:2], Node{Name: "1795548165", Created: chain()[0].Created}), Query{}, virshOut(
			" Name         Creation Time",
			"-----------------------------------------",
			" 1795548165   2026-11-24 19:22:45 +0000",
			" c1           2026-11-24 19:22:45 +0000",
			"",
		)},

		{"forest plain", forestNodes(), Query{}, virshOut(
			" Name   Creation Time",
			"-----------------------------------",
			" -m     2023-11-14 22:33:20 +0000",
			" 10     2023-11-14 22:28:20 +0000",
			" 9      2023-11-14 22:30:00 +0000",
			" _u     2023-11-14 22:26:40 +0000",
			" a.1    2023-11-14 22:31:40 +0000",
			" r1     2023-11-14 22:13:20 +0000",
			" x1     2023-11-14 22:15:00 +0000",
			" x2     2023-11-14 22:21:40 +0000",
			" x3     2023-11-14 22:23:20 +0000",
			" y1     2023-11-14 22:16:40 +0000",
			" Y2     2023-11-14 22:18:20 +0000",
			" y3     2023-11-14 22:25:00 +0000",
			" z1     2023-11-14 22:20:00 +0000",
			"",
		)},
		{"forest parent", forestNodes(), Query{Parent: true}, virshOut(
			" Name   Creation Time               Parent",
			"--------------------------------------------",
			" -m     2023-11-14 22:33:20 +0000   a.1",
			" 10     2023-11-14 22:28:20 +0000   _u",
			" 9      2023-11-14 22:30:00 +0000   _u",
			" _u     2023-11-14 22:26:40 +0000   ",
			" a.1    2023-11-14 22:31:40 +0000   ",
			" r1     2023-11-14 22:13:20 +0000   ",
			" x1     2023-11-14 22:15:00 +0000   r1",
			" x2     2023-11-14 22:21:40 +0000   r1",
			" x3     2023-11-14 22:23:20 +0000   r1",
			" y1     2023-11-14 22:16:40 +0000   x1",
			" Y2     2023-11-14 22:18:20 +0000   x1",
			" y3     2023-11-14 22:25:00 +0000   x3",
			" z1     2023-11-14 22:20:00 +0000   Y2",
			"",
		)},
		{"forest leaves, narrower names", forestNodes(), Query{Leaves: true, Parent: true}, virshOut(
			" Name   Creation Time               Parent",
			"--------------------------------------------",
			" -m     2023-11-14 22:33:20 +0000   a.1",
			" 10     2023-11-14 22:28:20 +0000   _u",
			" 9      2023-11-14 22:30:00 +0000   _u",
			" x2     2023-11-14 22:21:40 +0000   r1",
			" y1     2023-11-14 22:16:40 +0000   x1",
			" y3     2023-11-14 22:25:00 +0000   x3",
			" z1     2023-11-14 22:20:00 +0000   Y2",
			"",
		)},
		{"forest tree", forestNodes(), Query{Tree: true}, virshOut(
			"_u",
			"  |",
			"  +- 10",
			"  +- 9",
			"    ",
			"a.1",
			"  |",
			"  +- -m",
			"    ",
			"r1",
			"  |",
			"  +- x1",
			"  |   |",
			"  |   +- y1",
			"  |   +- Y2",
			"  |       |",
			"  |       +- z1",
			"  |         ",
			"  +- x2",
			"  +- x3",
			"      |",
			"      +- y3",
			"        ",
			"",
		)},
		{"forest tree from, children only", forestNodes(), Query{Tree: true, From: "r1"}, virshOut(
			"r1",
			"  |",
			"  +- x1",
			"  +- x2",
			"  +- x3",
			"    ",
			"",
		)},
		{"forest tree from, descendants", forestNodes(), Query{Tree: true, From: "r1", Descendants: true}, virshOut(
			"r1",
			"  |",
			"  +- x1",
			"  |   |",
			"  |   +- y1",
			"  |   +- Y2",
			"  |       |",
			"  |       +- z1",
			"  |         ",
			"  +- x2",
			"  +- x3",
			"      |",
			"      +- y3",
			"        ",
			"",
		)},
		{"forest tree from a leaf", forestNodes(), Query{Tree: true, From: "y3"}, virshOut(
			"y3",
			"",
			"",
		)},
		{"forest names from", forestNodes(), Query{Name: true, From: "x1", Descendants: true}, virshOut(
			"y1",
			"Y2",
			"z1",
			"",
		)},
		{"names from a leaf print nothing", forestNodes(), Query{Name: true, From: "y3"}, virshOut(
			"",
		)},

		// Empty domain: tables keep their header, the other layouts print
		// nothing but virsh's trailing newline.
		{"empty plain", nil, Query{}, virshOut(
			" Name   Creation Time",
			"-----------------------",
			"",
		)},
		{"empty parent", nil, Query{Parent: true}, virshOut(
			" Name   Creation Time   Parent",
			"--------------------------------",
			"",
		)},
		{"empty tree", nil, Query{Tree: true}, virshOut("")},
		{"empty names", nil, Query{Name: true}, virshOut("")},
		{"filter leaving nothing", chain(), Query{Leaves: true, NoLeaves: true}, virshOut(
			" Name   Creation Time",
			"-----------------------",
			"",
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(t, tt.all, tt.q); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s\n(got %q)", got, tt.want, got)
			}
		})
	}
}

func TestWriteTableQuiet(t *testing.T) {
	// `virsh -q checkpoint-list`: no header, widths from the data only,
	// and no trailing empty line either (that comes from the command loop).
	nodes, _ := Select(chain()[1:], Query{}) // c1, c2
	var b strings.Builder
	if err := WriteTableQuiet(&b, nodes, false, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := " c1   2026-11-24 19:22:45 +0000\n c2   2026-11-24 19:22:45 +0000\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}

	b.Reset()
	if err := WriteTableQuiet(&b, nil, true, time.UTC); err != nil {
		t.Fatal(err)
	}
	if b.String() != "" {
		t.Errorf("empty quiet table = %q, want nothing", b.String())
	}
}

func TestTableSkipsCheckpointsWithoutCreationTime(t *testing.T) {
	// Observed with virsh 9.0: a checkpoint redefined with creationTime 0
	// has no <creationTime> in its XML, and virsh leaves it out of both
	// table layouts while --name and --tree still show it.
	all := []Node{{Name: "z0", Created: time.Unix(0, 0)}, {Name: "z1", Parent: "z0", Created: time.Unix(1, 0)}}
	if got, want := render(t, all, Query{Parent: true}), virshOut(
		" Name   Creation Time               Parent",
		"--------------------------------------------",
		" z1     1970-01-01 00:00:01 +0000   z0",
		"",
	); got != want {
		t.Errorf("table got %q, want %q", got, want)
	}
	if got, want := render(t, all, Query{Name: true}), virshOut("z0", "z1", ""); got != want {
		t.Errorf("names got %q, want %q", got, want)
	}
	if got, want := render(t, all, Query{Tree: true}), virshOut("z0", "  |", "  +- z1", "    ", ""); got != want {
		t.Errorf("tree got %q, want %q", got, want)
	}

	var b strings.Builder
	if err := WriteTable(&b, []Node{{Name: "unset"}}, false, time.UTC); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "unset") {
		t.Errorf("zero Created should not be listed:\n%s", b.String())
	}
}

func TestTableUsesLocation(t *testing.T) {
	ist := time.FixedZone("IST", 5*3600+30*60)
	west := time.FixedZone("X", -3*3600)
	nodes := []Node{{Name: "c1", Created: time.Date(2026, 11, 24, 19, 22, 45, 0, time.UTC)}}
	for _, tc := range []struct {
		loc  *time.Location
		want string
	}{
		{ist, " c1     2026-11-25 00:52:45 +0530\n"},
		{west, " c1     2026-11-24 16:22:45 -0300\n"},
	} {
		var b strings.Builder
		if err := WriteTable(&b, nodes, false, tc.loc); err != nil {
			t.Fatal(err)
		}
		if lines := strings.SplitAfter(b.String(), "\n"); len(lines) < 3 || lines[2] != tc.want {
			t.Errorf("in %v got %q, want row %q", tc.loc, b.String(), tc.want)
		}
	}
}

func TestTableEscapesAndMeasuresCells(t *testing.T) {
	// Checkpoint names are ASCII by libvirt's schema, but the table must
	// stay aligned for any string, as vsh-table keeps it. Widths follow
	// what virsh 9.0 did with such names in a C.UTF-8 locale.
	tests := []struct {
		in, out string
		width   int
	}{
		{"c1", "c1", 2},
		{"日本", "日本", 4},
		{"a😀b", "a😀b", 4},
		{"x\u00ady", "x\u00ady", 3}, // soft hyphen is drawn
		{"z\u200bw", "z\u200bw", 2}, // zero-width space
		{"e\u0301", "e\u0301", 1},   // combining accent
		{"a\tb", `a\x09b`, 6},       // control characters are escaped
		{"\x7f", `\x7f`, 4},         // so is DEL
		{`a\xb`, `a\x5cxb`, 7},      // and a literal \x, to stay unambiguous
		{"\xc3(", `\xff(`, 5},       // invalid UTF-8: virsh's sign-extension quirk
		{"\u0085", `\xff\xff`, 8},   // C1 control, not printable
	}
	for _, tt := range tests {
		out, w := encodeCell(tt.in)
		if out != tt.out || w != tt.width {
			t.Errorf("encodeCell(%q) = %q, %d; want %q, %d", tt.in, out, w, tt.out, tt.width)
		}
	}

	created := time.Date(2026, 11, 24, 19, 22, 45, 0, time.UTC)
	var b strings.Builder
	if err := WriteTable(&b, []Node{{Name: "日本", Created: created}, {Name: "a\tb", Created: created}}, false, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := " Name     Creation Time\n" +
		"-------------------------------------\n" +
		" 日本     2026-11-24 19:22:45 +0000\n" +
		` a\x09b   2026-11-24 19:22:45 +0000` + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWriteTreeFollowsNodeOrder(t *testing.T) {
	// With --topological virsh draws siblings in list order, not by name.
	nodes := []Node{{Name: "a"}, {Name: "c", Parent: "a"}, {Name: "b", Parent: "a"}, {Name: "d", Parent: "b"}, {Name: "e"}}
	var b strings.Builder
	if err := WriteTree(&b, nodes); err != nil {
		t.Fatal(err)
	}
	want := virshOut(
		"a",
		"  |",
		"  +- c",
		"  +- b",
		"      |",
		"      +- d",
		"        ",
		"e",
		"", // a root without children is closed by an empty line
		"",
	)
	if got := b.String() + CommandTrailer; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
