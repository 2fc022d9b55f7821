package xmlselect

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

const xmlNamespace = "http://www.w3.org/XML/1998/namespace"

type kind int

const (
	docNode kind = iota
	elemNode
	attrNode
	textNode
	cdataNode
	commentNode
	piNode
)

// nsDecl is a namespace declaration (xmlns or xmlns:prefix) on an element.
type nsDecl struct {
	prefix string // "" for the default namespace
	uri    string
}

// node is one node of a document parsed the way virsh parses it.
type node struct {
	kind     kind
	parent   *node
	children []*node // documents and elements; processing instructions included
	attrs    []*node // elements only, in document order, without xmlns declarations
	nsDefs   []nsDecl
	prefix   string // elements and attributes: prefix as written
	local    string // elements and attributes: local name; PIs: target
	uri      string // elements and attributes: namespace URI ("" for none)
	data     string // text, CDATA, comment, PI content, attribute value
	noData   bool   // PI without content: <?target?>
	idx      int    // position in parent's children (or attrs)
	order    int    // document order
	doc      *document
}

type document struct {
	root       *node
	version    string // from the XML declaration; "" means "1.0"
	encoding   string // from the XML declaration
	standalone int    // -1 unset, 0 no, 1 yes
}

func (n *node) qname() string {
	if n.prefix != "" {
		return n.prefix + ":" + n.local
	}
	return n.local
}

// stringValue is the XPath string-value of n.
func (n *node) stringValue() string {
	switch n.kind {
	case docNode, elemNode:
		var b strings.Builder
		var walk func(*node)
		walk = func(m *node) {
			for _, c := range m.children {
				switch c.kind {
				case textNode, cdataNode:
					b.WriteString(c.data)
				case elemNode:
					walk(c)
				}
			}
		}
		walk(n)
		return b.String()
	}
	return n.data
}

// frame is an open element while parsing.
type frame struct {
	n *node
	// space mirrors libxml2's ctxt->space: -1 unspecified, 0 xml:space
	// default, 1 xml:space preserve, -2 unspecified but the element already
	// received character data.
	space int
	ns    map[string]string // declarations made on this element
}

// parseDocument parses s the way virsh does for --xpath (libxml2 with
// xmlKeepBlanksDefault(0)): whitespace-only text that libxml2's "blanks"
// heuristic deems ignorable is dropped, adjacent text is merged.
func parseDocument(s string) (*document, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("document is not valid UTF-8")
	}
	in := []byte(s)
	doc := &document{standalone: -1}
	root := &node{kind: docNode, doc: doc}
	doc.root = root
	dec := xml.NewDecoder(bytes.NewReader(in))
	dec.Strict = true
	var stack []*frame
	sawRoot := false

	lookup := func(prefix string) (string, bool) {
		if prefix == "xml" {
			return xmlNamespace, true
		}
		for i := len(stack) - 1; i >= 0; i-- {
			if u, ok := stack[i].ns[prefix]; ok {
				return u, true
			}
		}
		return "", prefix == ""
	}
	appendChild := func(parent, c *node) {
		c.parent = parent
		c.doc = doc
		c.idx = len(parent.children)
		parent.children = append(parent.children, c)
	}

	for {
		start := dec.InputOffset()
		tok, err := dec.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("invalid XML document: %w", err)
		}
		raw := in[start:dec.InputOffset()]
		var cur *frame
		if len(stack) > 0 {
			cur = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if cur == nil && sawRoot {
				return nil, errors.New("invalid XML document: extra content at the end of the document")
			}
			sawRoot = true
			f := &frame{space: -1, ns: map[string]string{}}
			if cur != nil && cur.space != -2 {
				f.space = cur.space
			}
			e := &node{kind: elemNode}
			values := rawAttrValues(raw, len(t.Attr))
			type pending struct {
				prefix, local, value string
			}
			var plain []pending
			for i, a := range t.Attr {
				v := a.Value
				if values != nil {
					v = values[i]
				}
				switch {
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					f.ns[""] = v
					e.nsDefs = append(e.nsDefs, nsDecl{"", v})
				case a.Name.Space == "xmlns":
					if a.Name.Local == "xml" {
						continue // libxml2 drops redundant xml declarations
					}
					f.ns[a.Name.Local] = v
					e.nsDefs = append(e.nsDefs, nsDecl{a.Name.Local, v})
				default:
					plain = append(plain, pending{a.Name.Space, a.Name.Local, v})
				}
			}
			stack = append(stack, f)
			e.prefix, e.local = t.Name.Space, t.Name.Local
			if u, ok := lookup(e.prefix); ok {
				e.uri = u
			} else {
				// libxml2 reports a namespace error and keeps the
				// qualified name as the element's name.
				e.local, e.prefix = e.prefix+":"+e.local, ""
			}
			for _, p := range plain {
				a := &node{kind: attrNode, parent: e, doc: doc, idx: len(e.attrs), prefix: p.prefix, local: p.local, data: p.value}
				if p.prefix != "" {
					if u, ok := lookup(p.prefix); ok {
						a.uri = u
					} else {
						a.local, a.prefix = p.prefix+":"+p.local, ""
					}
				}
				if a.prefix == "xml" && a.local == "space" {
					switch p.value {
					case "default":
						f.space = 0
					case "preserve":
						f.space = 1
					}
				}
				e.attrs = append(e.attrs, a)
			}
			f.n = e
			if cur == nil {
				appendChild(root, e)
			} else {
				appendChild(cur.n, e)
			}
		case xml.EndElement:
			if cur == nil {
				return nil, errors.New("invalid XML document: unexpected end tag")
			}
			name := t.Name.Local
			if t.Name.Space != "" {
				name = t.Name.Space + ":" + name
			}
			want := cur.n.local
			if cur.n.prefix != "" {
				want = cur.n.prefix + ":" + want
			}
			if name != want {
				return nil, fmt.Errorf("invalid XML document: element <%s> closed by </%s>", want, name)
			}
			stack = stack[:len(stack)-1]
		case xml.CharData:
			isCDATA := bytes.HasPrefix(raw, []byte("<![CDATA["))
			if cur == nil {
				if isCDATA || !isBlank(string(t)) {
					return nil, errors.New("invalid XML document: text outside the root element")
				}
				continue
			}
			e := cur.n
			if isCDATA {
				appendChild(e, &node{kind: cdataNode, data: string(t)})
				continue
			}
			text := string(t)
			hasRef := bytes.IndexByte(raw, '&') >= 0
			if !hasRef && isBlank(text) && cur.space != 1 && cur.space != -2 {
				// libxml2's areBlanks() heuristic (no DTD).
				keep := false
				if len(e.children) == 0 {
					rest := in[dec.InputOffset():]
					keep = bytes.HasPrefix(rest, []byte("</"))
				} else if e.children[len(e.children)-1].kind == textNode {
					keep = true
				} else if e.children[0].kind == textNode {
					keep = true
				}
				if !keep {
					continue
				}
			}
			if hasLiteral(raw) && cur.space == -1 {
				cur.space = -2
			}
			if n := len(e.children); n > 0 && e.children[n-1].kind == textNode {
				e.children[n-1].data += text
			} else {
				appendChild(e, &node{kind: textNode, data: text})
			}
		case xml.Comment:
			parent := root
			if cur != nil {
				parent = cur.n
			}
			appendChild(parent, &node{kind: commentNode, data: string(t)})
		case xml.ProcInst:
			if t.Target == "xml" {
				if cur != nil || sawRoot || len(root.children) > 0 {
					return nil, errors.New("invalid XML document: misplaced XML declaration")
				}
				parseXMLDecl(doc, string(t.Inst))
				continue
			}
			parent := root
			if cur != nil {
				parent = cur.n
			}
			pi := &node{kind: piNode, local: t.Target, data: string(t.Inst)}
			// <?target?> has no content at all, unlike <?target ?>.
			pi.noData = bytes.HasPrefix(raw[2+len(t.Target):], []byte("?>"))
			appendChild(parent, pi)
		case xml.Directive:
			// DOCTYPE and friends: libvirt never emits them; ignored.
		}
	}
	if len(stack) > 0 {
		return nil, errors.New("invalid XML document: premature end of data")
	}
	if !sawRoot {
		return nil, errors.New("invalid XML document: no root element")
	}
	order := 0
	var number func(*node)
	number = func(n *node) {
		n.order = order
		order++
		for _, a := range n.attrs {
			a.order = order
			order++
		}
		for _, c := range n.children {
			number(c)
		}
	}
	number(root)
	return doc, nil
}

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return false
		}
	}
	return true
}

// hasLiteral reports whether raw character data contains anything besides
// entity and character references.
func hasLiteral(raw []byte) bool {
	for len(raw) > 0 {
		if raw[0] != '&' {
			return true
		}
		i := bytes.IndexByte(raw, ';')
		if i < 0 {
			return true
		}
		raw = raw[i+1:]
	}
	return false
}

func parseXMLDecl(doc *document, inst string) {
	for _, name := range []string{"version", "encoding", "standalone"} {
		v, ok := declAttr(inst, name)
		if !ok {
			continue
		}
		switch name {
		case "version":
			doc.version = v
		case "encoding":
			doc.encoding = v
		case "standalone":
			switch v {
			case "yes":
				doc.standalone = 1
			case "no":
				doc.standalone = 0
			}
		}
	}
}

func declAttr(inst, name string) (string, bool) {
	i := strings.Index(inst, name)
	if i < 0 {
		return "", false
	}
	rest := strings.TrimLeft(inst[i+len(name):], " \t\r\n")
	if !strings.HasPrefix(rest, "=") {
		return "", false
	}
	rest = strings.TrimLeft(rest[1:], " \t\r\n")
	if rest == "" || (rest[0] != '"' && rest[0] != '\'') {
		return "", false
	}
	q := rest[0]
	j := strings.IndexByte(rest[1:], q)
	if j < 0 {
		return "", false
	}
	return rest[1 : 1+j], true
}

// rawAttrValues re-reads the attribute values of a start tag from its raw
// bytes so that literal tabs and newlines are normalized to spaces as XML
// requires (and libxml2 does), while character references such as &#10; are
// kept. It returns nil if the tag cannot be re-read (the caller then uses
// encoding/xml's values).
func rawAttrValues(raw []byte, n int) []string {
	if n == 0 {
		return nil
	}
	i := 1 // skip '<'
	for i < len(raw) && !isSpaceByte(raw[i]) && raw[i] != '>' && raw[i] != '/' {
		i++
	}
	var out []string
	for {
		for i < len(raw) && isSpaceByte(raw[i]) {
			i++
		}
		if i >= len(raw) || raw[i] == '>' || raw[i] == '/' {
			break
		}
		for i < len(raw) && raw[i] != '=' && !isSpaceByte(raw[i]) {
			i++
		}
		for i < len(raw) && isSpaceByte(raw[i]) {
			i++
		}
		if i >= len(raw) || raw[i] != '=' {
			return nil
		}
		i++
		for i < len(raw) && isSpaceByte(raw[i]) {
			i++
		}
		if i >= len(raw) || (raw[i] != '"' && raw[i] != '\'') {
			return nil
		}
		q := raw[i]
		j := bytes.IndexByte(raw[i+1:], q)
		if j < 0 {
			return nil
		}
		v, ok := decodeAttrValue(raw[i+1 : i+1+j])
		if !ok {
			return nil
		}
		out = append(out, v)
		i += j + 2
	}
	if len(out) != n {
		return nil
	}
	return out
}

func isSpaceByte(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

func decodeAttrValue(v []byte) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case '\r':
			if i+1 < len(v) && v[i+1] == '\n' {
				i++
			}
			b.WriteByte(' ')
		case '\n', '\t':
			b.WriteByte(' ')
		case '&':
			j := bytes.IndexByte(v[i:], ';')
			if j < 0 {
				return "", false
			}
			ref := string(v[i+1 : i+j])
			i += j
			switch {
			case ref == "lt":
				b.WriteByte('<')
			case ref == "gt":
				b.WriteByte('>')
			case ref == "amp":
				b.WriteByte('&')
			case ref == "apos":
				b.WriteByte('\'')
			case ref == "quot":
				b.WriteByte('"')
			case strings.HasPrefix(ref, "#x"):
				r, err := strconv.ParseUint(ref[2:], 16, 32)
				if err != nil {
					return "", false
				}
				b.WriteRune(rune(r))
			case strings.HasPrefix(ref, "#"):
				r, err := strconv.ParseUint(ref[1:], 10, 32)
				if err != nil {
					return "", false
				}
				b.WriteRune(rune(r))
			default:
				return "", false
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
