package checkpoint

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSelect(t *testing.T) {
	// Expectations without --topological are what virsh 9.0 listed for
	// forestNodes; the --topological ones follow our documented order.
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"all", Query{}, []string{"-m", "10", "9", "_u", "a.1", "r1", "x1", "x2", "x3", "y1", "Y2", "y3", "z1"}},
		{"parent layout lists the same", Query{Parent: true}, []string{"-m", "10", "9", "_u", "a.1", "r1", "x1", "x2", "x3", "y1", "Y2", "y3", "z1"}},
		{"roots", Query{Roots: true}, []string{"_u", "a.1", "r1"}},
		{"leaves", Query{Leaves: true}, []string{"-m", "10", "9", "x2", "y1", "y3", "z1"}},
		{"no-leaves", Query{NoLeaves: true}, []string{"_u", "a.1", "r1", "x1", "x3", "Y2"}},
		{"leaves and no-leaves list nothing", Query{Leaves: true, NoLeaves: true}, []string{}},
		{"roots that are leaves", Query{Roots: true, Leaves: true}, []string{}},
		{"roots that are not leaves", Query{Roots: true, NoLeaves: true}, []string{"_u", "a.1", "r1"}},
		{"from: direct children only", Query{From: "r1"}, []string{"x1", "x2", "x3"}},
		{"from a leaf", Query{From: "y3"}, []string{}},
		{"from descendants", Query{From: "r1", Descendants: true}, []string{"x1", "x2", "x3", "y1", "Y2", "y3", "z1"}},
		{"from descendants no-leaves", Query{From: "x1", Descendants: true, NoLeaves: true}, []string{"Y2"}},
		{"from descendants leaves", Query{From: "x1", Descendants: true, Leaves: true}, []string{"y1", "z1"}},
		{"from children leaves, judged on the whole tree", Query{From: "r1", Leaves: true}, []string{"x2"}},
		{"from tree includes from", Query{From: "r1", Tree: true}, []string{"r1", "x1", "x2", "x3"}},
		{"from tree sorts from in", Query{From: "x3", Tree: true, Descendants: true}, []string{"x3", "y3"}},
		{"from leaf tree", Query{From: "y3", Tree: true}, []string{"y3"}},
		{"tree", Query{Tree: true}, []string{"-m", "10", "9", "_u", "a.1", "r1", "x1", "x2", "x3", "y1", "Y2", "y3", "z1"}},
		{"name layout lists the same", Query{Name: true, Parent: true}, []string{"-m", "10", "9", "_u", "a.1", "r1", "x1", "x2", "x3", "y1", "Y2", "y3", "z1"}},

		{"topological", Query{Topological: true}, []string{"_u", "10", "9", "a.1", "-m", "r1", "x1", "y1", "Y2", "z1", "x2", "x3", "y3"}},
		{"topological roots", Query{Topological: true, Roots: true}, []string{"_u", "a.1", "r1"}},
		{"topological leaves", Query{Topological: true, Leaves: true}, []string{"10", "9", "-m", "y1", "z1", "x2", "y3"}},
		{"topological no-leaves", Query{Topological: true, NoLeaves: true}, []string{"_u", "a.1", "r1", "x1", "Y2", "x3"}},
		{"topological from", Query{Topological: true, From: "r1"}, []string{"x1", "x2", "x3"}},
		{"topological from descendants", Query{Topological: true, From: "r1", Descendants: true}, []string{"x1", "y1", "Y2", "z1", "x2", "x3", "y3"}},
		{"topological tree from descendants", Query{Topological: true, Tree: true, From: "x1", Descendants: true}, []string{"x1", "y1", "Y2", "z1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			all := forestNodes()
			got, err := Select(all, tt.q)
			if err != nil {
				t.Fatalf("Select(%+v): %v", tt.q, err)
			}
			if g := nodeNames(got); !slices.Equal(g, tt.want) {
				t.Errorf("Select(%+v) = %q, want %q", tt.q, g, tt.want)
			}
			if tt.q.Topological {
				assertParentsFirst(t, got)
			}
			if !slices.Equal(all, forestNodes()) {
				t.Errorf("Select modified its input")
			}
		})
	}
}

func assertParentsFirst(t *testing.T, nodes []Node) {
	t.Helper()
	seen := map[string]bool{}
	listed := map[string]bool{}
	for _, n := range nodes {
		listed[n.Name] = true
	}
	for _, n := range nodes {
		if listed[n.Parent] && !seen[n.Parent] {
			t.Errorf("%s listed before its parent %s in %q", n.Name, n.Parent, nodeNames(nodes))
		}
		seen[n.Name] = true
	}
}

func TestSelectKeepsNodeData(t *testing.T) {
	got, err := Select(forestNodes(), Query{From: "x1", Descendants: true})
	if err != nil {
		t.Fatal(err)
	}
	want := Node{Name: "z1", Parent: "Y2", Created: time.Unix(1700000400, 0)}
	if got[len(got)-1] != want {
		t.Errorf("last node = %+v, want %+v", got[len(got)-1], want)
	}
}

func TestSelectEmptyDomain(t *testing.T) {
	for _, q := range []Query{{}, {Roots: true}, {Leaves: true}, {Tree: true}, {Topological: true}} {
		got, err := Select(nil, q)
		if err != nil || len(got) != 0 {
			t.Errorf("Select(nil, %+v) = %v, %v; want nothing", q, got, err)
		}
	}
}

func TestSelectUnknownFrom(t *testing.T) {
	for _, q := range []Query{{From: "nope"}, {From: "nope", Descendants: true}, {From: "nope", Tree: true}} {
		_, err := Select(chain(), q)
		var nf *NotFoundError
		if !errors.As(err, &nf) {
			t.Fatalf("Select(%+v) error = %v, want *NotFoundError", q, err)
		}
		if nf.Name != "nope" || !slices.Equal(nf.Known, []string{"c1", "c2", "c3"}) {
			t.Errorf("NotFoundError = %+v", nf)
		}
		if want := "no domain checkpoint with matching name 'nope' (existing checkpoints: c1, c2, c3)"; err.Error() != want {
			t.Errorf("message = %q, want %q", err.Error(), want)
		}
		if want := "Domain checkpoint not found: no domain checkpoint with matching name 'nope'"; nf.VirshMessage() != want {
			t.Errorf("virsh message = %q, want %q", nf.VirshMessage(), want)
		}
	}

	_, err := Select(nil, Query{From: "c1"})
	if err == nil || !strings.Contains(err.Error(), "the domain has no checkpoints") {
		t.Errorf("error on empty domain = %v", err)
	}
}

func TestSelectRefusesWhatVirshRefuses(t *testing.T) {
	_, err := Select(chain(), Query{Descendants: true})
	if err == nil || err.Error() != "--descendants requires --from" {
		t.Errorf("error = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		q    Query
		want string // "" = accepted
	}{
		{Query{}, ""},
		{Query{Name: true, Parent: true}, ""},
		{Query{Leaves: true, NoLeaves: true}, ""},
		{Query{Tree: true, Topological: true}, ""},
		{Query{Tree: true, From: "c1", Descendants: true}, ""},
		{Query{Parent: true, From: "c1", Descendants: true, Leaves: true}, ""},
		{Query{Roots: true, Leaves: true, Topological: true, Name: true}, ""},

		{Query{Tree: true, Name: true}, "Options --tree and --name are mutually exclusive"},
		{Query{Parent: true, Roots: true}, "Options --parent and --roots are mutually exclusive"},
		{Query{Parent: true, Tree: true}, "Options --parent and --tree are mutually exclusive"},
		{Query{Roots: true, Tree: true}, "Options --roots and --tree are mutually exclusive"},
		{Query{Roots: true, From: "c1"}, "Options --roots and --from are mutually exclusive"},
		{Query{Leaves: true, Tree: true}, "--leaves and --tree are mutually exclusive"},
		{Query{NoLeaves: true, Tree: true}, "--no-leaves and --tree are mutually exclusive"},
		{Query{Descendants: true}, "--descendants requires --from"},

		// virsh checks in a fixed order; these were observed with virsh 9.0.
		{Query{Tree: true, Leaves: true, Name: true}, "Options --tree and --name are mutually exclusive"},
		{Query{Roots: true, Tree: true, From: "c1"}, "Options --roots and --tree are mutually exclusive"},
		{Query{Tree: true, Leaves: true, NoLeaves: true}, "--leaves and --tree are mutually exclusive"},
		{Query{Roots: true, Descendants: true}, "--descendants requires --from"},
		{Query{Parent: true, Roots: true, Tree: true}, "Options --parent and --roots are mutually exclusive"},
	}
	for _, tt := range tests {
		err := tt.q.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%+v.Validate() = %q, want %q", tt.q, got, tt.want)
		}
	}
}

func TestNameOrder(t *testing.T) {
	nodes := []Node{{Name: "b"}, {Name: "_x"}, {Name: "A"}, {Name: "B"}, {Name: "a"}, {Name: "Z"}, {Name: "-1"}, {Name: "10"}, {Name: "9"}, {Name: "a.b"}, {Name: "ab"}}
	got, err := Select(nodes, Query{Name: true})
	if err != nil {
		t.Fatal(err)
	}
	// Case-insensitive like strcasecmp ("_" sorts before letters even
	// though 'A' < '_' in ASCII); exact ties fall back to byte order.
	want := []string{"-1", "10", "9", "_x", "A", "a", "a.b", "ab", "B", "b", "Z"}
	if g := nodeNames(got); !slices.Equal(g, want) {
		t.Errorf("order = %q, want %q", g, want)
	}
}

func TestHelpers(t *testing.T) {
	all := forestNodes()
	check := func(what string, got, want []string) {
		t.Helper()
		if got == nil {
			got = []string{}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("Children(r1)", Children(all, "r1"), []string{"x1", "x2", "x3"})
	check("Children(x1)", Children(all, "x1"), []string{"y1", "Y2"})
	check("Children(z1)", Children(all, "z1"), []string{})
	check("Children(unknown)", Children(all, "nope"), []string{})
	check("Descendants(r1)", Descendants(all, "r1"), []string{"x1", "x2", "x3", "y1", "Y2", "y3", "z1"})
	check("Descendants(_u)", Descendants(all, "_u"), []string{"10", "9"})
	check("Descendants(y3)", Descendants(all, "y3"), []string{})
	check("Roots", Roots(all), []string{"_u", "a.1", "r1"})
	check("Leaves", Leaves(all), []string{"-m", "10", "9", "x2", "y1", "y3", "z1"})
	check("Roots(nil)", Roots(nil), []string{})
	check("Leaves(chain)", Leaves(chain()), []string{"c3"})
}

func TestDanglingParentIsARoot(t *testing.T) {
	// libvirt links a checkpoint whose parent is gone to the metaroot.
	all := []Node{{Name: "orphan", Parent: "gone"}, {Name: "kid", Parent: "orphan"}, {Name: "root"}}
	got, err := Select(all, Query{Roots: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := nodeNames(got); !slices.Equal(g, []string{"orphan", "root"}) {
		t.Errorf("roots = %q", g)
	}
	var b strings.Builder
	if err := WriteTree(&b, all); err != nil {
		t.Fatal(err)
	}
	if want := "orphan\n  |\n  +- kid\n    \nroot\n\n"; b.String() != want {
		t.Errorf("tree = %q, want %q", b.String(), want)
	}
}

func TestCorruptInputTerminates(t *testing.T) {
	// A parent cycle cannot come from libvirt, but must not hang us or
	// lose nodes.
	all := []Node{{Name: "a", Parent: "b"}, {Name: "b", Parent: "a"}, {Name: "r"}, {Name: "self", Parent: "self"}}
	got, err := Select(all, Query{Topological: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := nodeNames(got); !slices.Equal(g, []string{"r", "a", "b", "self"}) {
		t.Errorf("topological = %q", g)
	}
	if d := Descendants(all, "a"); !slices.Equal(d, []string{"b"}) {
		t.Errorf("Descendants(a) = %q", d)
	}
	dup := []Node{{Name: "x"}, {Name: "x", Parent: "x"}}
	var b strings.Builder
	if err := WriteTree(&b, dup); err != nil {
		t.Fatal(err)
	}
}
