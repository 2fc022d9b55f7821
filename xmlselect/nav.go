package xmlselect

import "github.com/antchfx/xpath"

// navigator implements xpath.NodeNavigator over the parsed tree.
// Processing instructions are not visible to XPath (antchfx/xpath has no
// node type for them).
type navigator struct {
	root *node
	cur  *node
}

var _ xpath.NodeNavigator = (*navigator)(nil)

func (x *navigator) NodeType() xpath.NodeType {
	switch x.cur.kind {
	case docNode:
		return xpath.RootNode
	case elemNode:
		return xpath.ElementNode
	case attrNode:
		return xpath.AttributeNode
	case commentNode:
		return xpath.CommentNode
	default: // text, CDATA
		return xpath.TextNode
	}
}

func (x *navigator) LocalName() string {
	switch x.cur.kind {
	case elemNode, attrNode:
		return x.cur.local
	}
	return ""
}

func (x *navigator) Prefix() string {
	switch x.cur.kind {
	case elemNode, attrNode:
		return x.cur.prefix
	}
	return ""
}

// NamespaceURL is used by antchfx/xpath for namespace-uri() and for
// prefixed name tests.
func (x *navigator) NamespaceURL() string {
	switch x.cur.kind {
	case elemNode, attrNode:
		return x.cur.uri
	}
	return ""
}

func (x *navigator) Value() string { return x.cur.stringValue() }

func (x *navigator) Copy() xpath.NodeNavigator {
	n := *x
	return &n
}

func (x *navigator) MoveToRoot() { x.cur = x.root }

func (x *navigator) MoveToParent() bool {
	if x.cur.parent == nil {
		return false
	}
	x.cur = x.cur.parent
	return true
}

func (x *navigator) MoveToNextAttribute() bool {
	switch x.cur.kind {
	case elemNode:
		if len(x.cur.attrs) == 0 {
			return false
		}
		x.cur = x.cur.attrs[0]
		return true
	case attrNode:
		p := x.cur.parent
		if x.cur.idx+1 >= len(p.attrs) {
			return false
		}
		x.cur = p.attrs[x.cur.idx+1]
		return true
	}
	return false
}

func visible(n *node) bool { return n.kind != piNode }

func (x *navigator) MoveToChild() bool {
	if x.cur.kind != docNode && x.cur.kind != elemNode {
		return false
	}
	for _, c := range x.cur.children {
		if visible(c) {
			x.cur = c
			return true
		}
	}
	return false
}

func (x *navigator) MoveToFirst() bool {
	if x.cur.kind == attrNode || x.cur.parent == nil {
		return false
	}
	for _, c := range x.cur.parent.children[:x.cur.idx] {
		if visible(c) {
			x.cur = c
			return true
		}
	}
	return false
}

func (x *navigator) MoveToNext() bool {
	if x.cur.kind == attrNode || x.cur.parent == nil {
		return false
	}
	for _, c := range x.cur.parent.children[x.cur.idx+1:] {
		if visible(c) {
			x.cur = c
			return true
		}
	}
	return false
}

func (x *navigator) MoveToPrevious() bool {
	if x.cur.kind == attrNode || x.cur.parent == nil {
		return false
	}
	sib := x.cur.parent.children
	for i := x.cur.idx - 1; i >= 0; i-- {
		if visible(sib[i]) {
			x.cur = sib[i]
			return true
		}
	}
	return false
}

func (x *navigator) MoveTo(other xpath.NodeNavigator) bool {
	o, ok := other.(*navigator)
	if !ok || o.root != x.root {
		return false
	}
	x.cur = o.cur
	return true
}
