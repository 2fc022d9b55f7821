package checkpoint

import (
	"bufio"
	"io"
	"strings"
	"time"
)

// CommandTrailer is what virsh's command loop (vshCommandRun) writes to
// stdout after every command, successful or not, unless -q is given. It
// belongs to no layout: that is why `virsh checkpoint-list` output always
// ends in an empty line while `virsh -q checkpoint-list` output does not.
// A command that wants virsh's bytes writes a layout and then this.
const CommandTrailer = "\n"

// virsh formats creationTime with GLib's "%Y-%m-%d %H:%M:%S %z" in the
// local zone.
const timeLayout = "2006-01-02 15:04:05 -0700"

// hasCreationTime reports whether libvirt would put a <creationTime> in
// the checkpoint XML: it omits the element when the value is 0, and virsh
// then skips the checkpoint in its table (it does list it with --name and
// --tree).
func hasCreationTime(n Node) bool {
	return !n.Created.IsZero() && n.Created.Unix() != 0
}

// WriteTable writes virsh's default layout, or the --parent layout when
// withParent is set. Times are shown in loc (nil means time.Local), as
// virsh shows them in its own zone.
func WriteTable(w io.Writer, nodes []Node, withParent bool, loc *time.Location) error {
	return writeTable(w, nodes, withParent, loc, true)
}

// WriteTableQuiet is WriteTable as `virsh -q` prints it: no header and no
// dash line, and column widths computed from the data rows alone.
func WriteTableQuiet(w io.Writer, nodes []Node, withParent bool, loc *time.Location) error {
	return writeTable(w, nodes, withParent, loc, false)
}

func writeTable(w io.Writer, nodes []Node, withParent bool, loc *time.Location, header bool) error {
	if loc == nil {
		loc = time.Local
	}
	rows := [][]string{{"Name", "Creation Time"}}
	if withParent {
		rows[0] = append(rows[0], "Parent")
	}
	for _, n := range nodes {
		if !hasCreationTime(n) {
			continue
		}
		row := []string{n.Name, n.Created.In(loc).Format(timeLayout)}
		if withParent {
			row = append(row, n.Parent)
		}
		rows = append(rows, row)
	}

	// Cells are escaped before measuring, as vsh-table does, so a control
	// character counts as the four columns of its \xNN form.
	widths := make([][]int, len(rows))
	maxw := make([]int, len(rows[0]))
	for i, row := range rows {
		widths[i] = make([]int, len(row))
		for j, cell := range row {
			row[j], widths[i][j] = encodeCell(cell)
			if (header || i > 0) && widths[i][j] > maxw[j] {
				maxw[j] = widths[i][j]
			}
		}
	}

	bw := bufio.NewWriter(w)
	first := 1
	if header {
		first = 0
	}
	for i := first; i < len(rows); i++ {
		for j, cell := range rows[i] {
			bw.WriteString(" ")
			bw.WriteString(cell)
			// Every column but the last is padded to its width plus two,
			// even when the cell is empty: hence the trailing spaces of a
			// root's row in the --parent layout.
			if j < len(rows[i])-1 {
				bw.WriteString(strings.Repeat(" ", maxw[j]-widths[i][j]+2))
			}
		}
		bw.WriteString("\n")
		if i == 0 {
			for _, m := range maxw {
				bw.WriteString(strings.Repeat("-", m+3))
			}
			bw.WriteString("\n")
		}
	}
	return bw.Flush()
}

// WriteNames writes the --name layout: one raw name per line. Unlike the
// table, virsh does not escape names here.
func WriteNames(w io.Writer, nodes []Node) error {
	bw := bufio.NewWriter(w)
	for _, n := range nodes {
		bw.WriteString(n.Name)
		bw.WriteString("\n")
	}
	return bw.Flush()
}

// WriteTree writes the --tree layout (vshTreePrint). Every node whose
// parent is not among nodes starts a tree, which covers both real roots
// and the --from checkpoint Select puts in a --tree listing. Trees and
// siblings appear in the order of nodes. An empty list prints nothing.
func WriteTree(w io.Writer, nodes []Node) error {
	present := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		present[n.Name] = true
	}
	t := treeWriter{w: bufio.NewWriter(w), nodes: nodes, onPath: map[string]bool{}}
	for i, n := range nodes {
		if n.Parent == "" || !present[n.Parent] {
			t.node(i, i, true)
		}
	}
	return t.w.Flush()
}

type treeWriter struct {
	w      *bufio.Writer
	nodes  []Node
	indent []byte
	// onPath guards against duplicate names, which would otherwise make a
	// node its own descendant and recurse forever.
	onPath map[string]bool
}

// node prints nodes[id] and its subtree. last is the index of the final
// sibling of nodes[id]: it decides whether the branch line continues
// ('|') past this node and whether a closing blank line follows.
func (t *treeWriter) node(id, last int, root bool) {
	name := t.nodes[id].Name
	t.w.Write(t.indent)
	if !root {
		t.w.WriteString("+- ")
	}
	t.w.WriteString(name)
	t.w.WriteString("\n")

	if !root {
		if id == last {
			t.indent = append(t.indent, ' ', ' ')
		} else {
			t.indent = append(t.indent, '|', ' ')
		}
	}

	lastChild := -1
	for i, n := range t.nodes {
		if n.Parent == name {
			lastChild = i
		}
	}
	if lastChild != -1 {
		t.w.Write(t.indent)
		t.w.WriteString("  |\n")
	}

	t.indent = append(t.indent, ' ', ' ')
	t.onPath[name] = true
	for i, n := range t.nodes {
		if n.Parent == name && !t.onPath[n.Name] {
			t.node(i, lastChild, false)
		}
	}
	delete(t.onPath, name)
	t.indent = t.indent[:len(t.indent)-2]

	// The last leaf of a branch closes it with a line holding just the
	// current indent; that is where virsh's whitespace-only lines come
	// from.
	if lastChild == -1 && id == last {
		t.w.Write(t.indent)
		t.w.WriteString("\n")
	}
	if !root {
		t.indent = t.indent[:len(t.indent)-2]
	}
}
