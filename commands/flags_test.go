package commands

import (
	"testing"

	"vbackup/checkpoint"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// Flags may stand before or after the positional arguments, as in virsh.
func TestCheckpointListFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want checkpointListOptions
	}{
		{[]string{"checkpoint-list", "vm1"}, checkpointListOptions{Domain: "vm1"}},
		{[]string{"checkpoint-list", "vm1", "--tree"}, checkpointListOptions{Domain: "vm1", Query: checkpoint.Query{Tree: true}}},
		{[]string{"checkpoint-list", "--parent", "vm1"}, checkpointListOptions{Domain: "vm1", Query: checkpoint.Query{Parent: true}}},
		{[]string{"checkpoint-list", "vm1", "--name", "--leaves"}, checkpointListOptions{Domain: "vm1", Query: checkpoint.Query{Name: true, Leaves: true}}},
		{[]string{"checkpoint-list", "vm1", "--from", "c1", "--descendants", "--topological"},
			checkpointListOptions{Domain: "vm1", Query: checkpoint.Query{From: "c1", Descendants: true, Topological: true}}},
		{[]string{"checkpoint-list", "vm1", "--json", "--roots"}, checkpointListOptions{Domain: "vm1", JSON: true, Query: checkpoint.Query{Roots: true}}},
	} {
		got, r := parse(t, newCheckpointListCommand, tc.args...)
		wantCode(t, r, ExitOK)
		if got != tc.want {
			t.Errorf("%v: options %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint-list"}, "missing DOMAIN argument"},
		{[]string{"checkpoint-list", "vm1", "extra"}, `unexpected argument "extra"`},
		{[]string{"checkpoint-list", "vm1", "--tree", "--parent"}, "Options --parent and --tree are mutually exclusive"},
		{[]string{"checkpoint-list", "vm1", "--json", "--tree"}, "--json and --tree cannot be used together"},
		{[]string{"checkpoint-list", "vm1", "--descendants"}, "--descendants requires --from"},
		{[]string{"checkpoint-list", "vm1", "--leaves", "--tree"}, "--leaves and --tree are mutually exclusive"},
		{[]string{"checkpoint-list", "vm1", "--from", ""}, "--from needs a checkpoint name"},
		{[]string{"checkpoint-list", "vm1", "--bogus"}, "bogus"},
		{[]string{"checkpoint-delete", "vm1", "c1", "--children", "--children-only"}, "--children and --children-only cannot be used together"},
		{[]string{"checkpoint-delete", "vm1"}, "missing CHECKPOINT argument"},
		{[]string{"checkpoint-create", "vm1", "--redefine"}, "--redefine needs XMLFILE"},
		{[]string{"checkpoint-create", "vm1", "/nonexistent/cp.xml"}, "cannot read XMLFILE"},
		{[]string{"checkpoint-create", "vm1", "--redefine-validate"}, "--redefine-validate needs --redefine"},
		{[]string{"checkpoint-create-as", "vm1", "a/b"}, "a/b"},
		{[]string{"checkpoint-create-as", "vm1", "--diskspec", "vda,checkpoint=yes"}, `checkpoint must be "bitmap" or "no"`},
		{[]string{"checkpoint-dumpxml", "vm1", "c1", "--wrap"}, "--wrap needs --xpath"},
		{[]string{"checkpoint-info", "vm1"}, "missing CHECKPOINT argument"},
		{[]string{"checkpoint-parent", "vm1", "c1", "c2"}, `unexpected argument "c2"`},
		{[]string{"checkpoint-edit"}, "missing DOMAIN argument"},
		{[]string{"no-such-command"}, `unknown command "no-such-command"`},
		{[]string{"backup-fetch", "vm1", "--to", "/b", "--tls-certs", ""}, "--tls-certs needs a folder"},
		{[]string{"backup-begin", "vm1", "--pull", "--tls", "--tls-certs", "/c"}, "--tls-certs needs --fetch"},
	} {
		r := vb(t, nil, tc.args...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want 2\n%s", tc.args, r.code, r.stderr)
			continue
		}
		wantStderr(t, r, tc.want, "usage: vbackup")
		if r.stdout != "" {
			t.Errorf("%v: a usage error printed to stdout: %q", tc.args, r.stdout)
		}
	}
}

func TestCheckpointCreateAsFlags(t *testing.T) {
	got, r := parse(t, newCheckpointCreateAsCommand, "checkpoint-create-as", "vm1", "c1",
		"--description", "before upgrade", "--diskspec", "vda,bitmap=b1", "--diskspec", "vdb,checkpoint=no", "--print-xml")
	wantCode(t, r, ExitOK)
	want := xmlgen.CheckpointSpec{Name: "c1", Description: "before upgrade", Disks: []xmlgen.DiskSpec{
		{Name: "vda", Bitmap: "b1"}, {Name: "vdb", Checkpoint: "no"},
	}}
	if got.Domain != "vm1" || !got.PrintXML || got.Quiesce || !equalSpec(got.Spec, want) {
		t.Fatalf("options %+v", got)
	}
}

func TestCheckpointDeleteFlags(t *testing.T) {
	got, r := parse(t, newCheckpointDeleteCommand, "checkpoint-delete", "vm1", "c1", "--children-only", "--metadata")
	wantCode(t, r, ExitOK)
	if got != (checkpointDeleteOptions{Domain: "vm1", Checkpoint: "c1", Flags: virt.DeleteFlags{ChildrenOnly: true, MetadataOnly: true}}) {
		t.Fatalf("options %+v", got)
	}
}

func TestCheckpointDumpXMLFlags(t *testing.T) {
	got, r := parse(t, newCheckpointDumpXMLCommand, "checkpoint-dumpxml", "--no-domain", "vm1", "c1", "--size", "--xpath", "//disk", "--wrap")
	wantCode(t, r, ExitOK)
	if got != (checkpointDumpXMLOptions{Domain: "vm1", Checkpoint: "c1", Flags: virt.XMLFlags{NoDomain: true, Size: true}, XPath: "//disk", Wrap: true}) {
		t.Fatalf("options %+v", got)
	}
}

func equalSpec(a, b xmlgen.CheckpointSpec) bool {
	if a.Name != b.Name || a.Description != b.Description || len(a.Disks) != len(b.Disks) {
		return false
	}
	for i := range a.Disks {
		if a.Disks[i] != b.Disks[i] {
			return false
		}
	}
	return true
}

// --tls-certs reaches the fetch as given, from backup-fetch and from
// backup-begin --fetch.
func TestTLSCertsFlags(t *testing.T) {
	got, r := parse(t, newBackupFetchCommand, "backup-fetch", "--tls-certs", "/etc/pki/mine", "vm1", "--to", "/b")
	wantCode(t, r, ExitOK)
	if got.Domain != "vm1" || got.Dir != "/b" || got.TLSCerts != "/etc/pki/mine" {
		t.Errorf("backup-fetch: options %+v", got)
	}
	begin, r := parse(t, newBackupBeginCommand, "backup-begin", "vm1", "--pull", "--tls", "--fetch", "/b", "--tls-certs", "/etc/pki/mine")
	wantCode(t, r, ExitOK)
	if begin.FetchDir != "/b" || begin.TLSCerts != "/etc/pki/mine" || !begin.Server.Spec.TLS {
		t.Errorf("backup-begin: options %+v", begin)
	}
}
