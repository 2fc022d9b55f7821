package xmlselect

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// dumper mirrors libxml2 2.9's xmlNodeDump(buf, doc, node, 0, 1), which is
// what virsh uses (virXMLNodeToString) to print each selected node.
type dumper struct {
	b      strings.Builder
	format bool // libxml2 ctxt->format == 1
	level  int
	// asciiAttrs: write non-ASCII characters of attribute values as
	// &#xHEX; references, as libxml2 does when the attribute's document
	// has no declared encoding.
	asciiAttrs bool
	// wrapped: the nodes belong to virsh's new <nodes> document, which
	// keeps asciiAttrs even inside a copied document node.
	wrapped bool
}

// maxIndentLevel is libxml2's MAX_INDENT (60) / indent size (2).
const maxIndentLevel = 30

func (d *dumper) indent() {
	n := d.level
	if n > maxIndentLevel {
		n = maxIndentLevel
	}
	for ; n > 0; n-- {
		d.b.WriteString("  ")
	}
}

func (d *dumper) dump(n *node, isRoot bool) {
	switch n.kind {
	case docNode:
		d.docContent(n.doc)
	case elemNode:
		d.element(n, isRoot)
	case attrNode:
		d.attr(n)
	case textNode:
		d.b.WriteString(escapeText(n.data))
	case cdataNode:
		d.cdata(n.data)
	case commentNode:
		if !isRoot && d.format {
			d.indent()
		}
		d.b.WriteString("<!--")
		d.b.WriteString(n.data)
		d.b.WriteString("-->")
	case piNode:
		if !isRoot && d.format {
			d.indent()
		}
		d.b.WriteString("<?")
		d.b.WriteString(n.local)
		if !n.noData {
			d.b.WriteByte(' ')
			d.b.WriteString(n.data)
		}
		d.b.WriteString("?>")
	}
}

func (d *dumper) element(n *node, isRoot bool) {
	if !isRoot && d.format {
		d.indent()
	}
	d.b.WriteByte('<')
	d.b.WriteString(n.qname())
	for _, ns := range n.nsDefs {
		if ns.prefix == "xml" {
			continue
		}
		d.b.WriteString(" xmlns")
		if ns.prefix != "" {
			d.b.WriteByte(':')
			d.b.WriteString(ns.prefix)
		}
		d.b.WriteByte('=')
		d.b.WriteString(quoteString(ns.uri))
	}
	for _, a := range n.attrs {
		d.attr(a)
	}
	if len(n.children) == 0 {
		d.b.WriteString("/>")
		return
	}
	saved := d.format
	if d.format {
		for _, c := range n.children {
			if c.kind == textNode || c.kind == cdataNode {
				d.format = false
				break
			}
		}
	}
	d.b.WriteByte('>')
	if d.format {
		d.b.WriteByte('\n')
	}
	if d.level >= 0 {
		d.level++
	}
	for _, c := range n.children {
		d.dump(c, false)
		if d.format {
			d.b.WriteByte('\n')
		}
	}
	if d.level > 0 {
		d.level--
	}
	if d.format {
		d.indent()
	}
	d.b.WriteString("</")
	d.b.WriteString(n.qname())
	d.b.WriteByte('>')
	d.format = saved
}

// docContent mirrors xmlDocContentDumpOutput: an XML declaration naming the
// output encoding (always UTF-8 for xmlNodeDump), then each top-level node
// on its own line. Like libxml2 it leaves the indentation level at 0.
func (d *dumper) docContent(doc *document) {
	version := doc.version
	if version == "" {
		version = "1.0"
	}
	d.b.WriteString("<?xml version=")
	d.b.WriteString(quoteString(version))
	d.b.WriteString(` encoding="UTF-8"`)
	switch doc.standalone {
	case 0:
		d.b.WriteString(` standalone="no"`)
	case 1:
		d.b.WriteString(` standalone="yes"`)
	}
	d.b.WriteString("?>\n")
	saved := d.asciiAttrs
	if !d.wrapped {
		// libxml2 sets the document's encoding to the output
		// encoding while dumping it.
		d.asciiAttrs = false
	}
	for _, c := range doc.root.children {
		d.level = 0
		d.dump(c, true)
		d.b.WriteByte('\n')
	}
	d.asciiAttrs = saved
}

func (d *dumper) attr(a *node) {
	d.b.WriteByte(' ')
	d.b.WriteString(a.qname())
	d.b.WriteString(`="`)
	d.b.WriteString(escapeAttr(a.data, d.asciiAttrs))
	d.b.WriteByte('"')
}

func (d *dumper) cdata(s string) {
	if s == "" {
		d.b.WriteString("<![CDATA[]]>")
		return
	}
	// A "]]>" inside the content is split across two sections, as
	// libxml2 does.
	for {
		i := strings.Index(s, "]]>")
		if i < 0 {
			break
		}
		d.b.WriteString("<![CDATA[")
		d.b.WriteString(s[:i+2])
		d.b.WriteString("]]>")
		s = s[i+2:]
	}
	if s != "" {
		d.b.WriteString("<![CDATA[")
		d.b.WriteString(s)
		d.b.WriteString("]]>")
	}
}

// escapeText mirrors libxml2's xmlEscapeContent.
func escapeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '\r':
			b.WriteString("&#13;")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// escapeAttr mirrors libxml2's xmlBufAttrSerializeTxtContent.
func escapeAttr(s string, ascii bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			b.WriteString("&#10;")
		case c == '\r':
			b.WriteString("&#13;")
		case c == '\t':
			b.WriteString("&#9;")
		case c == '"':
			b.WriteString("&quot;")
		case c == '<':
			b.WriteString("&lt;")
		case c == '>':
			b.WriteString("&gt;")
		case c == '&':
			b.WriteString("&amp;")
		case c >= utf8.RuneSelf && ascii:
			r, size := utf8.DecodeRuneInString(s[i:])
			fmt.Fprintf(&b, "&#x%X;", r)
			i += size
			continue
		default:
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
}

// quoteString mirrors libxml2's xmlBufWriteQuotedString.
func quoteString(s string) string {
	if strings.Contains(s, `"`) {
		if strings.Contains(s, "'") {
			return `"` + strings.ReplaceAll(s, `"`, "&quot;") + `"`
		}
		return "'" + s + "'"
	}
	return `"` + s + `"`
}

// wrapNodes builds what virsh --wrap dumps: a <nodes> element to which
// copies of the selected nodes are added with xmlDocCopyNode/xmlAddChild.
func wrapNodes(nodes []*node) *node {
	top := &node{kind: elemNode, local: "nodes"}
	for _, n := range nodes {
		switch n.kind {
		case attrNode:
			// The copy loses its namespace (no parent while
			// copying) and replaces an attribute of the same name.
			c := &node{kind: attrNode, local: n.local, data: n.data}
			kept := top.attrs[:0]
			for _, a := range top.attrs {
				if a.local != c.local {
					kept = append(kept, a)
				}
			}
			top.attrs = append(kept, c)
		case elemNode:
			c := *n
			c.nsDefs = reconcileNamespaces(n)
			top.children = append(top.children, &c)
		case textNode:
			if k := len(top.children); k > 0 && top.children[k-1].kind == textNode {
				merged := *top.children[k-1]
				merged.data += n.data
				top.children[k-1] = &merged
				continue
			}
			top.children = append(top.children, n)
		default:
			top.children = append(top.children, n)
		}
	}
	return top
}

// reconcileNamespaces returns the namespace declarations of a copy of e made
// by xmlDocCopyNode: its own declarations, followed by declarations for
// prefixes used in the copied subtree but declared above e.
func reconcileNamespaces(e *node) []nsDecl {
	defs := append([]nsDecl(nil), e.nsDefs...)
	var chain []*node // ancestors within the copy, e first
	declared := func(prefix string) bool {
		if prefix == "xml" {
			return true
		}
		for _, ns := range defs {
			if ns.prefix == prefix {
				return true
			}
		}
		for _, m := range chain[1:] {
			for _, ns := range m.nsDefs {
				if ns.prefix == prefix {
					return true
				}
			}
		}
		return false
	}
	need := func(prefix, uri string) {
		if !declared(prefix) {
			defs = append(defs, nsDecl{prefix, uri})
		}
	}
	var visit func(*node)
	visit = func(n *node) {
		chain = append(chain, n)
		if n.uri != "" {
			need(n.prefix, n.uri)
		}
		for _, a := range n.attrs {
			if a.uri != "" {
				need(a.prefix, a.uri)
			}
		}
		for _, c := range n.children {
			if c.kind == elemNode {
				visit(c)
			}
		}
		chain = chain[:len(chain)-1]
	}
	visit(e)
	return defs
}
