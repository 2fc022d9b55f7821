package checkpoint

import (
	"errors"
	"fmt"
	"strings"
)

// Query holds `virsh checkpoint-list`'s flags. Roots, Leaves, NoLeaves,
// From, Descendants, Topological and Tree decide what is listed; Parent
// and Name only pick a layout but take part in virsh's flag conflicts, so
// Validate needs them too.
type Query struct {
	Parent      bool   // --parent
	Roots       bool   // --roots
	Leaves      bool   // --leaves
	NoLeaves    bool   // --no-leaves
	Tree        bool   // --tree
	From        string // --from NAME; "" means the flag was not given
	Descendants bool   // --descendants
	Name        bool   // --name
	Topological bool   // --topological
}

// Validate refuses the flag combinations virsh refuses, with virsh's
// message (virsh prints it as "error: <message>" on stderr and exits 1).
// The checks run in virsh's order, so when several conflicts apply the
// same one is reported.
//
// virsh also rejects an explicitly empty --from ("Failed to get option
// 'from': Option argument is empty"); Query cannot tell that apart from an
// absent flag, so the command layer has to.
func (q Query) Validate() error {
	from := q.From != ""
	exclusive := []struct {
		a, b string
		aSet bool
		bSet bool
	}{
		{"tree", "name", q.Tree, q.Name},
		{"parent", "roots", q.Parent, q.Roots},
		{"parent", "tree", q.Parent, q.Tree},
		{"roots", "tree", q.Roots, q.Tree},
		{"roots", "from", q.Roots, from},
	}
	for _, e := range exclusive {
		if e.aSet && e.bSet {
			return fmt.Errorf("Options --%s and --%s are mutually exclusive", e.a, e.b)
		}
	}
	// virsh words these two differently from the generic check above.
	if q.Tree && q.Leaves {
		return errors.New("--leaves and --tree are mutually exclusive")
	}
	if q.Tree && q.NoLeaves {
		return errors.New("--no-leaves and --tree are mutually exclusive")
	}
	if q.Descendants && !from {
		return errors.New("--descendants requires --from")
	}
	return nil
}

// NotFoundError is returned by Select when --from names no checkpoint.
type NotFoundError struct {
	Name  string
	Known []string // every checkpoint of the domain, in virsh's order
}

func (e *NotFoundError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("no domain checkpoint with matching name '%s' (the domain has no checkpoints)", e.Name)
	}
	return fmt.Sprintf("no domain checkpoint with matching name '%s' (existing checkpoints: %s)",
		e.Name, strings.Join(e.Known, ", "))
}

// VirshMessage is the text virsh itself prints after "error: " for this
// failure, for callers that must reproduce virsh's stderr.
func (e *NotFoundError) VirshMessage() string {
	return fmt.Sprintf("Domain checkpoint not found: no domain checkpoint with matching name '%s'", e.Name)
}

// Select returns the checkpoints `virsh checkpoint-list` lists for q, in
// the order virsh prints them. The input is not modified.
//
// What is listed follows libvirt: --from lists the direct children of a
// checkpoint, or all its descendants with --descendants; --roots lists
// checkpoints without a parent; --leaves and --no-leaves keep nodes
// without / with children (judged on the whole tree, not on the listed
// subset), and both together list nothing. With --tree and --from, the
// --from checkpoint itself is listed too, as the root of the tree.
//
// Order: virsh sorts by name with strcasecmp (see compareNames). With
// --topological virsh keeps libvirt's order, which only promises parents
// before children; sibling order there depends on libvirt's internals
// (newest link first in a running daemon, hash order after a restart).
// We emit a depth-first walk that visits roots and siblings in virsh's
// name order, so the result is deterministic and equals virsh whenever
// libvirt's order is forced (e.g. a chain). The --from checkpoint of a
// --tree listing comes first; virsh puts it last, which draws the same
// tree.
func Select(all []Node, q Query) ([]Node, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	f := newForest(all)

	var from Node
	if q.From != "" {
		n, ok := f.byName[q.From]
		if !ok {
			known := make([]Node, len(all))
			copy(known, all)
			sortNodes(known)
			return nil, &NotFoundError{Name: q.From, Known: names(known)}
		}
		from = n
	}

	var picked []Node
	switch {
	case q.From != "" && q.Descendants:
		picked = f.descendants(from.Name, map[string]bool{from.Name: true})
	case q.From != "":
		picked = append(picked, f.children[from.Name]...)
	case q.Roots:
		picked = append(picked, f.roots...)
	default:
		picked = f.topological(all)
	}

	out := make([]Node, 0, len(picked)+1)
	if q.Tree && q.From != "" {
		out = append(out, from)
	}
	for _, n := range picked {
		hasKids := len(f.children[n.Name]) > 0
		if (q.Leaves && hasKids) || (q.NoLeaves && !hasKids) {
			continue
		}
		out = append(out, n)
	}
	if !q.Topological {
		sortNodes(out)
	}
	return out, nil
}
