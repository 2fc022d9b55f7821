package contentsum

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"vbackup/nbd"
)

const mib = 1 << 20

// concat joins digests, for the outer hash written out by hand.
func concat(ds ...[32]byte) []byte {
	var b []byte
	for _, d := range ds {
		b = append(b, d[:]...)
	}
	return b
}

// The expected values come from crypto/sha256 alone, following the package
// doc's definition step by step, and two are pinned as text so that a
// change to that definition cannot pass unnoticed.
func TestOfReaderKnown(t *testing.T) {
	full := bytes.Repeat([]byte{0x5a}, mib)
	mixed := append(bytes.Repeat([]byte{1}, mib), append(make([]byte, mib), []byte("tail")...)...)
	tests := []struct {
		name    string
		content []byte
		want    [32]byte
		text    string
	}{
		{"empty", nil, sha256.Sum256(nil),
			"sha256-1m:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", []byte("abc"), sha256.Sum256(concat(sha256.Sum256([]byte("abc")))),
			"sha256-1m:4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358"},
		{"one full chunk", full, sha256.Sum256(concat(sha256.Sum256(full))), ""},
		{"partial last chunk", append(full, 'x'),
			sha256.Sum256(concat(sha256.Sum256(full), sha256.Sum256([]byte("x")))), ""},
		{"data, zeroes, tail", mixed, sha256.Sum256(concat(
			sha256.Sum256(mixed[:mib]), sha256.Sum256(mixed[mib:2*mib]), sha256.Sum256([]byte("tail")))), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OfReader(bytes.NewReader(tt.content), uint64(len(tt.content)))
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != tt.want || got.Size != uint64(len(tt.content)) {
				t.Errorf("got %v (size %d), want %x (size %d)", got, got.Size, tt.want, len(tt.content))
			}
			if tt.text != "" && got.String() != tt.text {
				t.Errorf("got %s, want %s", got, tt.text)
			}
		})
	}
}

func TestZeroDigest(t *testing.T) {
	const want = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"
	if d := zeroDigest(mib); hex.EncodeToString(d[:]) != want {
		t.Errorf("digest of a zero chunk is %x, want %s", d, want)
	}
	for _, n := range []uint64{0, 1, 512, mib - 1} {
		if zeroDigest(n) != sha256.Sum256(make([]byte, n)) {
			t.Errorf("zeroDigest(%d) is not the digest of %d zeroes", n, n)
		}
	}
}

func TestOfReaderShort(t *testing.T) {
	_, err := OfReader(bytes.NewReader(make([]byte, mib+10)), mib+20)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "at offset 1048576") {
		t.Errorf("reading past the end: %v; want ErrUnexpectedEOF at offset 1048576", err)
	}
}

func TestParse(t *testing.T) {
	s := Sum{Size: 5, Digest: sha256.Sum256([]byte("x"))}
	got, err := Parse(s.String())
	if err != nil || !got.Equal(s) || got.String() != s.String() {
		t.Errorf("Parse(%q) = %v, %v", s.String(), got, err)
	}
	if s.Equal(Sum{Size: 5}) {
		t.Error("sums with different digests are equal")
	}
	digits := strings.Repeat("ab", 32)
	bad := []struct{ text, want string }{
		{"", "no kind"},
		{digits, "no kind"},
		{"sha256:" + digits, `unknown kind "sha256"`},
		{"sha256-4m:" + digits, `unknown kind "sha256-4m"`},
		{"sha256-1m:" + digits[:62], "62 digits"},
		{"sha256-1m:" + digits + "00", "66 digits"},
		{"sha256-1m:" + strings.ToUpper(digits), "upper-case"},
		{"sha256-1m:" + digits[:62] + "zz", "invalid byte"},
		{" sha256-1m:" + digits, "unknown kind"},
	}
	for _, b := range bad {
		_, err := Parse(b.text)
		if err == nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), "want sha256-1m:<64") {
			t.Errorf("Parse(%q): %v; want an error saying %q", b.text, err, b.want)
		}
	}
}

func TestDataIn(t *testing.T) {
	const z, h = nbd.StateZero, nbd.StateHole
	ext := func(off, n uint64, flags uint32) nbd.Extent { return nbd.Extent{Offset: off, Length: n, Flags: flags} }
	tests := []struct {
		name string
		exts []nbd.Extent
		want []nbd.Extent
	}{
		{"nothing known", nil, []nbd.Extent{ext(100, 100, 0)}},
		{"all data", []nbd.Extent{ext(0, 300, 0)}, []nbd.Extent{ext(100, 100, 0)}},
		{"all zero", []nbd.Extent{ext(0, 300, z|h)}, nil},
		{"hole but not zero", []nbd.Extent{ext(0, 300, h)}, []nbd.Extent{ext(100, 100, 0)}},
		{"zero inside", []nbd.Extent{ext(0, 120, 0), ext(120, 30, z), ext(150, 150, h)},
			[]nbd.Extent{ext(100, 20, 0), ext(150, 50, 0)}},
		{"data between zeroes", []nbd.Extent{ext(50, 60, z), ext(110, 10, 0), ext(120, 200, z)},
			[]nbd.Extent{ext(110, 10, 0)}},
		{"short of the end", []nbd.Extent{ext(100, 50, z)}, []nbd.Extent{ext(150, 50, 0)}},
	}
	for _, tt := range tests {
		if got := dataIn(tt.exts, 100, 200); !slices.Equal(got, tt.want) {
			t.Errorf("%s: dataIn = %v, want %v", tt.name, got, tt.want)
		}
	}
}
