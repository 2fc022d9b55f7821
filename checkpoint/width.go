package checkpoint

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// encodeCell returns a table cell as virsh's vshTableSafeEncode prints
// it, and its width in terminal columns, assuming virsh runs in a UTF-8
// locale (C.UTF-8 here).
//
// libvirt's schema only admits [A-Za-z0-9_.-] in checkpoint names, so for
// real checkpoints this is the identity with width len(name); the rest
// keeps arbitrary strings from breaking the column layout the way virsh
// keeps them from breaking it.
//
// Quirk reproduced on purpose: virsh formats the escaped byte from a
// signed char into a 4-byte buffer, so every byte >= 0x80 it escapes
// comes out as `\xff`, whatever its value.
func encodeCell(s string) (string, int) {
	var b strings.Builder
	width := 0
	for i := 0; i < len(s); {
		c := s[i]
		if (c == '\\' && i+1 < len(s) && s[i+1] == 'x') || c < 0x20 || c == 0x7f {
			// Escaping a literal `\x` keeps the output unambiguous.
			fmt.Fprintf(&b, `\x%02x`, c)
			width += 4
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\xff`)
			width += 4
		case !printable(r):
			for k := 0; k < size; k++ {
				b.WriteString(`\xff`)
			}
			width += 4 * size
		default:
			b.WriteString(s[i : i+size])
			width += runeWidth(r)
		}
		i += size
	}
	return b.String(), width
}

// printable approximates glibc's iswprint: format characters (e.g. a
// zero-width space) and private-use characters print, C1 controls,
// surrogates and unassigned code points do not.
func printable(r rune) bool {
	return unicode.IsGraphic(r) || unicode.In(r, unicode.Cf, unicode.Co)
}

// runeWidth approximates glibc's wcwidth for printable runes: combining
// and format characters take no column (except the soft hyphen, which
// glibc draws), East Asian wide/fullwidth characters and emoji take two.
func runeWidth(r rune) int {
	switch {
	case r == 0x00AD:
		return 1
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf),
		0x1160 <= r && r <= 0x11FF: // Hangul medial vowels and final consonants join the preceding syllable
		return 0
	}
	for _, rg := range wideRanges {
		if r < rg[0] {
			break
		}
		if r <= rg[1] {
			return 2
		}
	}
	return 1
}

// wideRanges lists the East Asian Wide and Fullwidth blocks (sorted,
// inclusive). It is coarser than Unicode's table, which is fine for the
// only thing it is used for: keeping columns aligned.
var wideRanges = [][2]rune{
	{0x1100, 0x115F},
	{0x231A, 0x231B},
	{0x2329, 0x232A},
	{0x23E9, 0x23EC},
	{0x23F0, 0x23F0},
	{0x23F3, 0x23F3},
	{0x25FD, 0x25FE},
	{0x2614, 0x2615},
	{0x2648, 0x2653},
	{0x267F, 0x267F},
	{0x2693, 0x2693},
	{0x26A1, 0x26A1},
	{0x26AA, 0x26AB},
	{0x26BD, 0x26BE},
	{0x26C4, 0x26C5},
	{0x26CE, 0x26CE},
	{0x26D4, 0x26D4},
	{0x26EA, 0x26EA},
	{0x26F2, 0x26F3},
	{0x26F5, 0x26F5},
	{0x26FA, 0x26FA},
	{0x26FD, 0x26FD},
	{0x2705, 0x2705},
	{0x270A, 0x270B},
	{0x2728, 0x2728},
	{0x274C, 0x274C},
	{0x274E, 0x274E},
	{0x2753, 0x2755},
	{0x2757, 0x2757},
	{0x2795, 0x2797},
	{0x27B0, 0x27B0},
	{0x27BF, 0x27BF},
	{0x2B1B, 0x2B1C},
	{0x2B50, 0x2B50},
	{0x2B55, 0x2B55},
	{0x2E80, 0x303E},
	{0x3041, 0x33FF},
	{0x3400, 0x4DBF},
	{0x4E00, 0x9FFF},
	{0xA000, 0xA4CF},
	{0xA960, 0xA97F},
	{0xAC00, 0xD7A3},
	{0xF900, 0xFAFF},
	{0xFE10, 0xFE19},
	{0xFE30, 0xFE6F},
	{0xFF00, 0xFF60},
	{0xFFE0, 0xFFE6},
	{0x16FE0, 0x16FE4},
	{0x17000, 0x18CFF},
	{0x1B000, 0x1B2FF},
	{0x1F004, 0x1F004},
	{0x1F0CF, 0x1F0CF},
	{0x1F18E, 0x1F18E},
	{0x1F191, 0x1F19A},
	{0x1F200, 0x1F251},
	{0x1F300, 0x1F320},
	{0x1F32D, 0x1F335},
	{0x1F337, 0x1F37C},
	{0x1F37E, 0x1F393},
	{0x1F3A0, 0x1F3CA},
	{0x1F3CF, 0x1F3D3},
	{0x1F3E0, 0x1F3F0},
	{0x1F3F4, 0x1F3F4},
	{0x1F3F8, 0x1F43E},
	{0x1F440, 0x1F440},
	{0x1F442, 0x1F4FC},
	{0x1F4FF, 0x1F53D},
	{0x1F54B, 0x1F54E},
	{0x1F550, 0x1F567},
	{0x1F57A, 0x1F57A},
	{0x1F595, 0x1F596},
	{0x1F5A4, 0x1F5A4},
	{0x1F5FB, 0x1F64F},
	{0x1F680, 0x1F6C5},
	{0x1F6CC, 0x1F6CC},
	{0x1F6D0, 0x1F6D2},
	{0x1F6D5, 0x1F6D7},
	{0x1F6DC, 0x1F6DF},
	{0x1F6EB, 0x1F6EC},
	{0x1F6F4, 0x1F6FC},
	{0x1F7E0, 0x1F7EB},
	{0x1F7F0, 0x1F7F0},
	{0x1F90C, 0x1F93A},
	{0x1F93C, 0x1F945},
	{0x1F947, 0x1F9FF},
	{0x1FA70, 0x1FAFF},
	{0x20000, 0x2FFFD},
	{0x30000, 0x3FFFD},
}
