package nbd

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// fuzzRequests are the requests in flight while FuzzReply feeds the parser:
// cookies 1-2 reads, 3 a block status over two contexts, 4 a write, 5 a
// one-extent block status.
func fuzzRequests() map[uint64]*request {
	return map[uint64]*request{
		1: {cookie: 1, cmd: cmdRead, off: 0, length: 4096, buf: make([]byte, 4096), wantHoles: true},
		2: {cookie: 2, cmd: cmdRead, off: 1 << 20, length: 512, buf: make([]byte, 512)},
		3: {cookie: 3, cmd: cmdBlockStatus, off: 4096, length: 8192},
		4: {cookie: 4, cmd: cmdWrite, off: 0, length: 512},
		5: {cookie: 5, cmd: cmdBlockStatus, flags: cmdFlagReqOne, off: 0, length: 4096},
	}
}

// FuzzReply feeds arbitrary server traffic to the reply parser. The first
// byte chooses simple (even) or structured (odd) replies. Whatever comes,
// the parser must not panic, must end (at the end of the input at the
// latest), and may only call a request good whose reply said all it must.
func FuzzReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		reqs := fuzzRequests()
		var finished []*request
		p := replyParser{
			r:          bufio.NewReader(bytes.NewReader(in[1:])),
			structured: in[0]&1 == 1,
			contexts:   []uint32{1, 2},
			lookup:     func(c uint64) *request { return reqs[c] },
			finish: func(r *request) {
				delete(reqs, r.cookie)
				finished = append(finished, r)
			},
		}
		for p.next() == nil {
		}
		for _, r := range finished {
			if r.err != nil {
				continue
			}
			switch r.cmd {
			case cmdRead:
				if p.structured && r.covered.total != uint64(r.length) {
					t.Fatalf("read %d good with %d of %d bytes", r.cookie, r.covered.total, r.length)
				}
				for _, h := range r.holes {
					if h.Offset < r.off || h.End() > r.off+uint64(r.length) {
						t.Fatalf("hole %v outside read %d", h, r.cookie)
					}
				}
			case cmdBlockStatus:
				for _, id := range p.contexts {
					exts := r.extents[id]
					if len(exts) == 0 || exts[0].Offset != r.off {
						t.Fatalf("block status %d good with extents %v for context %d", r.cookie, exts, id)
					}
				}
			}
		}
	})
}

// The seed corpus: good replies of each kind and a few bad ones. Rewrite
// it with go test -run TestFuzzSeeds -update.
func fuzzSeeds() map[string][]byte {
	data := patternAt(0, 4096)
	sr := func(parts ...[]byte) []byte { return append([]byte{1}, cat(parts...)...) }
	return map[string][]byte{
		"simple-read":     append([]byte{0}, cat(simpleReply(1, 0, data), simpleReply(4, 0, nil))...),
		"simple-error":    append([]byte{0}, simpleReply(2, 5, nil)...),
		"data-hole-none":  sr(dataChunk(1, false, 2048, data[:2048]), holeChunk(1, false, 0, 2048), noneChunk(1)),
		"two-reads":       sr(dataChunk(2, true, 1<<20, data[:512]), dataChunk(1, true, 0, data)),
		"block-status":    sr(statusChunk(3, false, 2, 8192, 1), statusChunk(3, true, 1, 4096, 0, 4096, 3)),
		"req-one":         sr(statusChunk(5, false, 1, 4096, 3), statusChunk(5, true, 2, 100, 0)),
		"error":           sr(errorChunk(1, true, 5, "disk on fire")),
		"error-offset":    sr(dataChunk(1, false, 0, data), errorOffsetChunk(1, true, 28, "full", 100)),
		"unknown-error":   sr(chunk(4, replyFlagDone, chunkErrorBit|9, []byte{0, 0, 0, 22, 0, 1, 'm', 7, 7})),
		"overlap":         sr(dataChunk(1, false, 0, data[:2048]), dataChunk(1, true, 2000, data[2000:])),
		"short":           sr(dataChunk(1, true, 0, data[:100])),
		"huge-length":     sr(chunk(3, replyFlagDone, chunkBlockStatus, nil)[:16], []byte{0xff, 0xff, 0xff, 0xf4}),
		"huge-hole":       sr(holeChunk(1, true, 4095, 0xffffffff)),
		"write-none":      sr(noneChunk(4)),
		"unknown-cookie":  sr(noneChunk(99)),
		"simple-on-sr":    sr(simpleReply(1, 0, data)),
		"error-too-long":  sr(chunk(1, replyFlagDone, chunkError, []byte{0, 0, 0, 5, 0xff, 0xff})),
		"status-too-long": sr(statusChunk(3, true, 1, 8192, 0, 1, 0)),
	}
}

func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReply")
	for name, in := range fuzzSeeds() {
		file := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale: run go test -run TestFuzzSeeds -update", file)
		}
	}
}
