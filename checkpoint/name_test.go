package checkpoint

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" = valid
	}{
		// Accepted by virsh 9.0 (checkpoint-create-as --name).
		{"c1", ""},
		{"1795548165", ""},
		{"-a", ""},
		{"a..b", ""},
		{"_x.", ""},
		{"Backup_2026-11-24.full", ""},
		{strings.Repeat("x", MaxNameLen), ""},

		// Refused by libvirt's schema (virsh: "Extra element name in
		// interleave"), or by virsh itself for the empty name.
		{"a/b", `invalid checkpoint name "a/b": a name cannot contain '/'`},
		{"", `invalid checkpoint name "": a name cannot be empty`},
		{".a", `invalid checkpoint name ".a": a name cannot start with '.'`},
		{".", `invalid checkpoint name ".": a name cannot start with '.'`},
		{"..", `invalid checkpoint name "..": a name cannot start with '.'`},
		{"a\nb", `invalid checkpoint name "a\nb": a name cannot contain a newline`},
		{"a b", `invalid checkpoint name "a b": a name may only contain ASCII letters, digits, '_', '-' and '.', not ' '`},
		{"ünï", `invalid checkpoint name "ünï": a name may only contain ASCII letters, digits, '_', '-' and '.', not 'ü'`},
		{"tab\there", `invalid checkpoint name "tab\there": a name may only contain ASCII letters, digits, '_', '-' and '.', not '\t'`},
		{"a:b", `invalid checkpoint name "a:b": a name may only contain ASCII letters, digits, '_', '-' and '.', not ':'`},
		{"a@b", `invalid checkpoint name "a@b": a name may only contain ASCII letters, digits, '_', '-' and '.', not '@'`},

		// Refused by the QEMU driver's metadata file name.
		{strings.Repeat("x", MaxNameLen+1), `invalid checkpoint name "` + strings.Repeat("x", MaxNameLen+1) + `": a name cannot be longer than 251 bytes (this one has 252)`},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		got := ""
		if err != nil {
			got = err.Error()
			var ine *InvalidNameError
			if !errors.As(err, &ine) || ine.Name != tt.name {
				t.Errorf("ValidateName(%q) error %T %+v, want *InvalidNameError for the name", tt.name, err, err)
			}
		}
		if got != tt.want {
			t.Errorf("ValidateName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
