package checkpoint

import (
	"strings"
	"time"
)

// chain is the brief's reference domain: c1 <- c2 <- c3, all created in
// the same second.
func chain() []Node {
	t := time.Date(2026, 11, 24, 19, 22, 45, 0, time.UTC)
	return []Node{
		{Name: "c3", Parent: "c2", Created: t},
		{Name: "c1", Created: t},
		{Name: "c2", Parent: "c1", Created: t},
	}
}

// forestNodes is the branchy domain the virsh goldens below were captured
// from (test:///default, checkpoints redefined from XML, TZ=UTC):
//
//	_u -> 10, 9
//	a.1 -> -m
//	r1 -> x1 -> y1
//	         -> Y2 -> z1
//	   -> x2
//	   -> x3 -> y3
//
// The names exercise virsh's case-insensitive sort: "-" < digits < "_" <
// letters, and Y2 between y1 and y3.
func forestNodes() []Node {
	at := func(k int64) time.Time { return time.Unix(1700000000+100*k, 0) }
	// Deliberately not in name or tree order.
	return []Node{
		{Name: "z1", Parent: "Y2", Created: at(4)},
		{Name: "r1", Created: at(0)},
		{Name: "x3", Parent: "r1", Created: at(6)},
		{Name: "-m", Parent: "a.1", Created: at(12)},
		{Name: "x1", Parent: "r1", Created: at(1)},
		{Name: "Y2", Parent: "x1", Created: at(3)},
		{Name: "9", Parent: "_u", Created: at(10)},
		{Name: "y1", Parent: "x1", Created: at(2)},
		{Name: "_u", Created: at(8)},
		{Name: "x2", Parent: "r1", Created: at(5)},
		{Name: "10", Parent: "_u", Created: at(9)},
		{Name: "a.1", Created: at(11)},
		{Name: "y3", Parent: "x3", Created: at(7)},
	}
}

// virshOut joins lines as virsh printed them; the final "" stands for the
// empty line virsh's command loop adds (CommandTrailer).
func virshOut(lines ...string) string {
	return strings.Join(lines, "\n") + "\n"
}

func nodeNames(nodes []Node) []string {
	out := []string{}
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}
