package xmlgen

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// validator finds virt-xml-validate (a shell script around xmllint). Without
// it the schema checks skip, except in CI, where a skip would hide that they
// never ran.
func validator(t *testing.T) string {
	t.Helper()
	testbed.Need(t, "virt-xml-validate", "xmllint")
	path, _ := exec.LookPath("virt-xml-validate")
	return path
}

// validate checks doc against libvirt's RelaxNG schema (e.g.
// "domaincheckpoint"), returning the validator's complaint if it fails.
func validate(t *testing.T, doc, schema string) error {
	t.Helper()
	tool := validator(t)
	file := filepath.Join(t.TempDir(), schema+".xml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, file, schema).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// The schema check must be able to fail, or the golden tests prove nothing:
// checkpoint='no' with a bitmap is what CheckpointXML refuses and the schema
// forbids, so marshal it around CheckpointXML.
func TestSchemaCheckRejectsInvalidDocument(t *testing.T) {
	cp := Checkpoint(CheckpointSpec{Disks: []DiskSpec{{Name: "vda", Checkpoint: "no", Bitmap: "b1"}}})
	doc, err := cp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, doc, "domaincheckpoint")
}

// wantInvalid fails unless virt-xml-validate rejects doc for the document
// itself, not for a validator that could not run at all.
func wantInvalid(t *testing.T, doc, schema string) {
	t.Helper()
	err := validate(t, doc, schema)
	if err == nil {
		t.Fatalf("virt-xml-validate accepted an invalid document:\n%s", doc)
	}
	if !strings.Contains(err.Error(), "fails to validate") {
		t.Fatalf("virt-xml-validate failed for another reason than the document: %v", err)
	}
}

// assertGolden compares a generated document with its golden file
// (rewritten by go test ./xmlgen -update) and validates it against
// libvirt's schema.
func assertGolden(t *testing.T, golden, got, schema string) {
	t.Helper()
	path := filepath.Join(goldenDir, golden)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./xmlgen -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("the document differs from %s (go test ./xmlgen -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
	if err := validate(t, got, schema); err != nil {
		t.Errorf("libvirt's schema rejects the document: %v\n%s", err, got)
	}
}
