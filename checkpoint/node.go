// Package checkpoint holds the libvirt-free logic behind vbackup's
// checkpoint commands: which checkpoints `virsh checkpoint-list` would
// select for a set of flags, in which order, and the exact bytes virsh
// prints for them.
//
// Everything here mirrors virsh 9.0 (tools/virsh-checkpoint.c,
// tools/vsh-table.c, tools/vsh.c) and libvirt's moment list
// (src/conf/virdomainmomentobjlist.c), so that vbackup's output can be
// compared byte for byte with real virsh.
package checkpoint

import (
	"slices"
	"strings"
	"time"
)

// Node is one checkpoint as libvirt reports it. Names are unique within a
// domain; the functions here assume so.
type Node struct {
	Name string
	// Parent is "" for a root. A parent that names no node is treated as
	// a root too, which is what libvirt does with a dangling parent link
	// (virDomainMomentLinkParent falls back to the metaroot).
	Parent string
	// Created is the checkpoint's creationTime (whole seconds). A zero
	// time, or the Unix epoch, means libvirt reports no creation time;
	// see WriteTable for why that matters.
	Created time.Time
}

// compareNames orders names the way virsh's list sorter does:
// strcasecmp, i.e. bytes compared after folding ASCII letters to lower
// case. strcasecmp leaves "b" and "B" equal and virsh's qsort then keeps
// libvirt's hash-table order, which is not reproducible; we break such
// ties by raw bytes so the result is at least deterministic.
func compareNames(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := foldASCII(a[i]), foldASCII(b[i])
		if ca != cb {
			return int(ca) - int(cb)
		}
	}
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func foldASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func sortNodes(nodes []Node) {
	slices.SortStableFunc(nodes, func(a, b Node) int { return compareNames(a.Name, b.Name) })
}

func sortNames(names []string) []string {
	slices.SortStableFunc(names, compareNames)
	return names
}

// forest indexes a checkpoint list by parent so the selection code can
// walk it like libvirt walks its first_child/sibling links.
type forest struct {
	byName   map[string]Node
	children map[string][]Node // parent name -> children in virsh order
	roots    []Node            // in virsh order
}

func newForest(all []Node) *forest {
	f := &forest{byName: make(map[string]Node, len(all)), children: map[string][]Node{}}
	for _, n := range all {
		if _, dup := f.byName[n.Name]; !dup {
			f.byName[n.Name] = n
		}
	}
	for _, n := range all {
		if f.isRoot(n) {
			f.roots = append(f.roots, n)
		} else {
			f.children[n.Parent] = append(f.children[n.Parent], n)
		}
	}
	sortNodes(f.roots)
	for _, kids := range f.children {
		sortNodes(kids)
	}
	return f
}

func (f *forest) isRoot(n Node) bool {
	if n.Parent == "" {
		return true
	}
	_, ok := f.byName[n.Parent]
	return !ok
}

// descendants returns everything below name, depth first with each parent
// before its children. The seen set keeps a corrupt, cyclic parent chain
// from looping forever; libvirt refuses such chains on input.
func (f *forest) descendants(name string, seen map[string]bool) []Node {
	var out []Node
	for _, c := range f.children[name] {
		if seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		out = append(out, c)
		out = append(out, f.descendants(c.Name, seen)...)
	}
	return out
}

// topological lists every node, parents before children. Nodes caught in a
// parent cycle are unreachable from any root; they are appended afterwards
// (in name order) rather than silently dropped.
func (f *forest) topological(all []Node) []Node {
	seen := map[string]bool{}
	var out []Node
	for _, r := range f.roots {
		if seen[r.Name] {
			continue
		}
		seen[r.Name] = true
		out = append(out, r)
		out = append(out, f.descendants(r.Name, seen)...)
	}
	rest := slices.Clone(all)
	sortNodes(rest)
	for _, n := range rest {
		if !seen[n.Name] {
			seen[n.Name] = true
			out = append(out, n)
			out = append(out, f.descendants(n.Name, seen)...)
		}
	}
	return out
}

func names(nodes []Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

// Children returns the names of name's direct children in virsh's name
// order (what `checkpoint-list --from name --name` prints).
func Children(all []Node, name string) []string {
	return names(newForest(all).children[name])
}

// Descendants returns the names of everything below name (children,
// grandchildren, ...) in virsh's name order, as
// `checkpoint-list --from name --descendants --name` prints them.
func Descendants(all []Node, name string) []string {
	return sortNames(names(newForest(all).descendants(name, map[string]bool{name: true})))
}

// Roots returns the names of checkpoints without a (known) parent, in
// virsh's name order.
func Roots(all []Node) []string {
	return names(newForest(all).roots)
}

// Leaves returns the names of checkpoints without children, in virsh's
// name order.
func Leaves(all []Node) []string {
	f := newForest(all)
	var out []string
	for _, n := range all {
		if len(f.children[n.Name]) == 0 {
			out = append(out, n.Name)
		}
	}
	return sortNames(out)
}
