package commands

import (
	"reflect"
	"testing"
)

func TestBackupManyFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want manyOptions
	}{
		// One DOMAIN stays the single backup, whatever --parallel says.
		{[]string{"backup", "vm1", "--to", "/b"}, manyOptions{}},
		{[]string{"backup", "vm1", "--to", "/b", "--parallel", "3"}, manyOptions{}},
		{[]string{"backup", "vm1", "vm2", "--to", "/b"}, manyOptions{On: true, Domains: []string{"vm1", "vm2"}, Parallel: 1}},
		{[]string{"backup", "--to", "/b", "b", "a", "--parallel", "2"}, manyOptions{On: true, Domains: []string{"b", "a"}, Parallel: 2}},
		{[]string{"backup", "--all", "--to", "/b"}, manyOptions{On: true, All: true, Parallel: 1}},
		{[]string{"backup", "--all", "--exclude", "test-*", "--exclude", "[ab]?", "--to", "/b", "--json"},
			manyOptions{On: true, All: true, Exclude: []string{"test-*", "[ab]?"}, Parallel: 1}},
	} {
		got, r := parse(t, newBackupCommand, tc.args...)
		wantCode(t, r, ExitOK)
		if !reflect.DeepEqual(got.Many, tc.want) || got.Dir != "/b" {
			t.Errorf("%v: options %+v, want %+v", tc.args, got.Many, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "--all", "vm1", "--to", "/b"}, `--all backs up every domain: give no DOMAIN with it ("vm1"), or leave --all out`},
		{[]string{"backup", "--to", "/b"}, "missing DOMAIN argument (or --all for every domain)"},
		{[]string{"backup", "vm1", "vm2", "--to", "/b", "--parallel", "0"}, `--parallel "0": give how many backups run at once, 1 or more`},
		{[]string{"backup", "--all", "--to", "/b", "--parallel", "two"}, `--parallel "two": give how many backups run at once, 1 or more`},
		{[]string{"backup", "vm1", "vm2", "--exclude", "vm*", "--to", "/b"}, "--exclude needs --all"},
		{[]string{"backup", "--all", "--exclude", "[a-", "--to", "/b"}, `--exclude "[a-": syntax error in pattern`},
		{[]string{"backup", "vm1", "vm2", "vm1", "--to", "/b"}, `domain "vm1" is named twice: name each domain once`},
		{[]string{"backup", "vm1", "vm2", "--disk", "vda", "--to", "/b"}, "--disk names one domain's disks: it cannot be used with several domains"},
	} {
		_, r := parse(t, newBackupCommand, tc.args...)
		wantCode(t, r, ExitUsage)
		wantStderr(t, r, tc.want, "usage: vbackup backup DOMAIN... --to DIR")
	}
}
