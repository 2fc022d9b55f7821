package commands

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These run each checkpoint command against libvirt's test driver, in
// process: output and exit status as a user sees them.

func TestCheckpointCommandsTestDriver(t *testing.T) {
	open := testDriver(t)

	r := vb(t, open, "checkpoint-create-as", "vm1", "c1", "--description", "first")
	wantCode(t, r, ExitOK)
	if r.stdout != "Domain checkpoint c1 created\n" {
		t.Errorf("create stdout %q", r.stdout)
	}
	// vdb is raw: left out by itself, and the user is told.
	wantStderr(t, r, "note: disk vdb (raw) cannot carry a bitmap")

	wantCode(t, vb(t, open, "checkpoint-create-as", "vm1", "c2"), ExitOK)
	wantCode(t, vb(t, open, "checkpoint-create-as", "vm1", "c3"), ExitOK)

	r = vb(t, open, "checkpoint-list", "vm1", "--name")
	wantCode(t, r, ExitOK)
	if r.stdout != "c1\nc2\nc3\n\n" {
		t.Errorf("--name stdout %q", r.stdout)
	}

	r = vb(t, open, "checkpoint-list", "vm1", "--tree")
	if want := "c1\n  |\n  +- c2\n      |\n      +- c3\n        \n\n"; r.stdout != want {
		t.Errorf("--tree stdout %q, want %q", r.stdout, want)
	}

	r = vb(t, open, "checkpoint-info", "vm1", "c2")
	wantCode(t, r, ExitOK)
	want := "Name:           c2\nDomain:         vm1\nParent:         c1\nChildren:       1\nDescendants:    1\n\n"
	if r.stdout != want {
		t.Errorf("info stdout %q, want %q", r.stdout, want)
	}

	r = vb(t, open, "checkpoint-info", "vm1", "c1", "--json")
	wantCode(t, r, ExitOK)
	var info jsonCheckpoint
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("info --json: %v\n%s", err, r.stdout)
	}
	if info.Name != "c1" || info.Parent != nil || info.Children != 1 || info.Descendants != 2 ||
		info.Description != "first" || len(info.Disks) != 2 || info.Disks[0].Checkpoint != "bitmap" || info.Disks[1].Checkpoint != "no" {
		t.Errorf("info --json = %+v", info)
	}

	r = vb(t, open, "checkpoint-list", "vm1", "--json", "--from", "c1", "--descendants")
	var list []jsonCheckpoint
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	if len(list) != 2 || list[0].Name != "c2" || *list[0].Parent != "c1" || list[1].Name != "c3" {
		t.Errorf("list --json --from c1 --descendants = %+v", list)
	}

	r = vb(t, open, "checkpoint-parent", "vm1", "c3")
	if r.code != 0 || r.stdout != "c2\n" {
		t.Errorf("parent: %d %q", r.code, r.stdout)
	}
	r = vb(t, open, "checkpoint-parent", "vm1", "c1")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `checkpoint "c1" of domain "vm1" has no parent`)

	r = vb(t, open, "checkpoint-dumpxml", "vm1", "c2", "--no-domain")
	wantCode(t, r, ExitOK)
	for _, part := range []string{"<name>c2</name>", "<name>c1</name>", "<disk name='vda' checkpoint='bitmap' bitmap='c2'/>"} {
		if !strings.Contains(r.stdout, part) {
			t.Errorf("dumpxml lacks %q:\n%s", part, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "<domain ") {
		t.Errorf("--no-domain printed the domain:\n%s", r.stdout)
	}

	r = vb(t, open, "checkpoint-delete", "vm1", "c1", "--children-only")
	if r.code != 0 || r.stdout != "Domain checkpoint c1 children deleted\n\n" {
		t.Errorf("delete --children-only: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = vb(t, open, "checkpoint-list", "vm1", "--name")
	if r.stdout != "c1\n\n" {
		t.Errorf("after delete: %q", r.stdout)
	}
	r = vb(t, open, "checkpoint-delete", "vm1", "c1")
	if r.code != 0 || r.stdout != "Domain checkpoint c1 deleted\n\n" {
		t.Errorf("delete: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = vb(t, open, "checkpoint-list", "vm1")
	if want := " Name   Creation Time\n-----------------------\n\n"; r.stdout != want {
		t.Errorf("empty list %q, want %q", r.stdout, want)
	}
}

func TestCheckpointErrorsTestDriver(t *testing.T) {
	open := testDriver(t)
	wantCode(t, vb(t, open, "checkpoint-create-as", "vm1", "c1"), ExitOK)

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"checkpoint-list", "nodom"}, []string{`domain "nodom" not found`, "its domains are vm1"}},
		{[]string{"checkpoint-info", "vm1", "nope"}, []string{`domain "vm1" has no checkpoint "nope"`, "its checkpoints are c1"}},
		{[]string{"checkpoint-dumpxml", "vm1", "nope"}, []string{`has no checkpoint "nope"`, "c1"}},
		{[]string{"checkpoint-delete", "vm1", "nope"}, []string{`has no checkpoint "nope"`}},
		{[]string{"checkpoint-list", "vm1", "--from", "nope"}, []string{`has no checkpoint "nope"`}},
		{[]string{"checkpoint-create-as", "vm1", "c1"}, []string{`already has a checkpoint "c1"`}},
		{[]string{"checkpoint-create-as", "vm1", "c9", "--diskspec", "vdz"}, []string{`no disk "vdz"`, "vda, vdb"}},
		{[]string{"checkpoint-create-as", "vm1", "c9", "--diskspec", "vdb"}, []string{`disk "vdb" is raw`, "vdb,checkpoint=no"}},
		{[]string{"checkpoint-create-as", "vm1", "c9", "--diskspec", "vda", "--diskspec", "vda"}, []string{"vda", "twice"}},
	} {
		r := vb(t, open, tc.args...)
		if r.code != ExitFailure {
			t.Errorf("%v: exit %d, want 1\n%s", tc.args, r.code, r.stderr)
			continue
		}
		wantStderr(t, r, tc.want...)
	}
	// Nothing the failures above tried was created.
	if r := vb(t, open, "checkpoint-list", "vm1", "--name"); r.stdout != "c1\n\n" {
		t.Errorf("after refused creates: %q", r.stdout)
	}
}

func TestCheckpointCreateAsPrintXML(t *testing.T) {
	open := testDriver(t)
	r := vb(t, open, "checkpoint-create-as", "vm1", "--print-xml", "--description", "nightly", "--diskspec", "vda,bitmap=nightly")
	wantCode(t, r, ExitOK)
	// Without a NAME, the name is the time in seconds, as libvirt makes it.
	m := regexp.MustCompile(`<name>(\d+)</name>`).FindStringSubmatch(r.stdout)
	if secs, _ := strconv.ParseInt(m[1], 10, 64); m == nil || time.Since(time.Unix(secs, 0)).Abs() > time.Minute {
		t.Errorf("generated name is not the time in seconds:\n%s", r.stdout)
	}
	for _, part := range []string{"<description>nightly</description>", `bitmap="nightly"`, `name="vdb" checkpoint="no"`} {
		if !strings.Contains(r.stdout, part) {
			t.Errorf("--print-xml lacks %q:\n%s", part, r.stdout)
		}
	}
	if r := vb(t, open, "checkpoint-list", "vm1", "--name"); r.stdout != "\n" {
		t.Errorf("--print-xml created something: %q", r.stdout)
	}
}

func TestCheckpointCreateFromFileAndEdit(t *testing.T) {
	open := testDriver(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "cp.xml")
	doc := "<domaincheckpoint><name>fromfile</name><description>from a file</description></domaincheckpoint>"
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	r := vb(t, open, "checkpoint-create", "vm1", file)
	wantCode(t, r, ExitOK)
	if r.stdout != "Domain checkpoint fromfile created from '"+file+"'\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	wantStderr(t, r, "vdb (raw)")

	// checkpoint-edit: an editor that changes the description redefines it.
	editor := filepath.Join(dir, "editor.sh")
	script := "#!/bin/sh\nsed -i 's|from a file|edited|' \"$1\"\n"
	if err := os.WriteFile(editor, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r = vbEnv(t, open, map[string]string{"EDITOR": editor}, "checkpoint-edit", "vm1", "fromfile")
	wantCode(t, r, ExitOK)
	if r.stdout != "Domain checkpoint fromfile edited.\n" {
		t.Errorf("edit stdout %q", r.stdout)
	}
	r = vb(t, open, "checkpoint-info", "vm1", "fromfile", "--json")
	if !strings.Contains(r.stdout, `"description": "edited"`) {
		t.Errorf("edit did not take:\n%s", r.stdout)
	}

	// An editor that renames is refused; the checkpoint is unchanged.
	rename := filepath.Join(dir, "rename.sh")
	script = "#!/bin/sh\nsed -i 's|<name>fromfile</name>|<name>other</name>|' \"$1\"\n"
	if err := os.WriteFile(rename, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r = vbEnv(t, open, map[string]string{"EDITOR": rename}, "checkpoint-edit", "vm1", "fromfile")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `cannot rename checkpoint "fromfile" to "other"`, "nothing changed")
	// The refused edit is kept where the message says, for the user to reuse.
	if m := regexp.MustCompile(`your edit is kept in (\S+\.xml)`).FindStringSubmatch(r.stderr); m == nil {
		t.Errorf("no kept file named:\n%s", r.stderr)
	} else {
		kept, err := os.ReadFile(m[1])
		if err != nil || !strings.Contains(string(kept), "<name>other</name>") {
			t.Errorf("kept edit %s: %v\n%s", m[1], err, kept)
		}
		os.RemoveAll(filepath.Dir(m[1]))
	}
	if r := vb(t, open, "checkpoint-list", "vm1", "--name"); r.stdout != "fromfile\n\n" {
		t.Errorf("after refused rename: %q", r.stdout)
	}

	// An editor that changes nothing changes nothing.
	r = vbEnv(t, open, map[string]string{"EDITOR": "true"}, "checkpoint-edit", "vm1", "fromfile")
	wantCode(t, r, ExitOK)
	if r.stdout != "Checkpoint fromfile XML configuration not changed.\n" {
		t.Errorf("unchanged edit: %q", r.stdout)
	}

	// Redefine from the dumped XML (after the metadata was deleted) brings it back.
	r = vb(t, open, "checkpoint-dumpxml", "vm1", "fromfile")
	saved := filepath.Join(dir, "saved.xml")
	if err := os.WriteFile(saved, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, vb(t, open, "checkpoint-delete", "vm1", "fromfile", "--metadata"), ExitOK)
	r = vb(t, open, "checkpoint-create", "vm1", saved, "--redefine")
	wantCode(t, r, ExitOK)
	if r := vb(t, open, "checkpoint-list", "vm1", "--name"); r.stdout != "fromfile\n\n" {
		t.Errorf("after redefine: %q", r.stdout)
	}
}
