// Package xmlselect reproduces what virsh prints for the --xpath EXPR
// [--wrap] option of its *-dumpxml commands (virshDumpXML in libvirt 9.0,
// serialized by libxml2 2.9).
package xmlselect

import (
	"fmt"
	"sort"
	"strings"

	"github.com/antchfx/xpath"
)

// Select evaluates expr over doc and returns the text virsh prints for
// --xpath (without the final newline virsh adds itself: the caller prints
// result+"\n").
//
// Without wrap each selected node is serialized on its own (libxml2's
// formatted output: blank text dropped, two-space indentation), in document
// order, separated by "\n"; no match gives "". With wrap, copies of the
// nodes are serialized inside a <nodes> element.
//
// An expression whose value is not a node-set (string(...), count(...),
// comparisons) is an error, as in virsh; so is an invalid expression.
func Select(doc, expr string, wrap bool) (string, error) {
	if err := checkSupported(expr); err != nil {
		return "", err
	}
	d, err := parseDocument(doc)
	if err != nil {
		return "", err
	}
	nodes, err := evaluate(d, expr)
	if err != nil {
		return "", err
	}
	dm := &dumper{format: true, asciiAttrs: d.encoding == ""}
	if wrap {
		dm.wrapped = true
		dm.asciiAttrs = true // the new document has no encoding
		dm.dump(wrapNodes(nodes), true)
		return dm.b.String(), nil
	}
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		dm.b.Reset()
		dm.format, dm.level = true, 0
		dm.dump(n, true)
		parts = append(parts, dm.b.String())
	}
	return strings.Join(parts, "\n"), nil
}

// evaluate returns the node-set selected by expr, in document order and
// without duplicates.
func evaluate(d *document, expr string) (nodes []*node, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid xpath '%s': %v", expr, r)
		}
	}()
	// No namespace prefixes are registered by virsh: libxml2 only knows
	// "xml". A non-nil map makes antchfx/xpath reject any other prefix.
	compiled, err := xpath.CompileWithNS(expr, map[string]string{"xml": xmlNamespace})
	if err != nil {
		return nil, fmt.Errorf("invalid xpath '%s': %v", expr, err)
	}
	nav := &navigator{root: d.root, cur: d.root}
	iter, ok := compiled.Evaluate(nav).(*xpath.NodeIterator)
	if !ok {
		return nil, fmt.Errorf("incorrect xpath '%s': the expression must select nodes", expr)
	}
	seen := map[*node]bool{}
	for iter.MoveNext() {
		n, ok := iter.Current().(*navigator)
		if !ok {
			return nil, fmt.Errorf("invalid xpath '%s': unexpected node", expr)
		}
		if !seen[n.cur] {
			seen[n.cur] = true
			nodes = append(nodes, n.cur)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].order < nodes[j].order })
	return nodes, nil
}

// checkSupported rejects XPath features that antchfx/xpath evaluates
// differently from libxml2: processing-instruction() (matches every node)
// and the namespace axis (not implemented).
func checkSupported(expr string) error {
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'':
			j := strings.IndexByte(expr[i+1:], c)
			if j < 0 {
				return nil // the parser reports it
			}
			i += j + 2
		case isNameByte(c):
			j := i
			for j < len(expr) && isNameByte(expr[j]) {
				j++
			}
			word := expr[i:j]
			rest := strings.TrimLeft(expr[j:], " \t\r\n")
			if word == "processing-instruction" && strings.HasPrefix(rest, "(") {
				return fmt.Errorf("unsupported xpath '%s': processing-instruction() is not supported", expr)
			}
			if word == "namespace" && strings.HasPrefix(rest, "::") {
				return fmt.Errorf("unsupported xpath '%s': the namespace axis is not supported", expr)
			}
			i = j
		default:
			i++
		}
	}
	return nil
}

func isNameByte(c byte) bool {
	return c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' ||
		c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}
