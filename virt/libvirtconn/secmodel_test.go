package libvirtconn

import "testing"

// A system daemon's capabilities, as Debian's libvirt 9.0 gives them.
const systemCaps = `<capabilities><host><uuid>9b1f0c5e-0000-0000-0000-000000000001</uuid>
<cpu><arch>x86_64</arch></cpu>
<secmodel><model>apparmor</model><doi>0</doi></secmodel>
<secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64055:+994</baselabel><baselabel type='qemu'>+64055:+994</baselabel></secmodel>
</host></capabilities>`

func TestSecurityModels(t *testing.T) {
	models, err := securityModels(systemCaps)
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 2 || models[0].Name != "apparmor" || models[1].Name != "dac" {
		t.Fatalf("models %+v, want apparmor and dac", models)
	}
	if got := models[1].BaseLabels["qemu"]; got != "+64055:+994" {
		t.Errorf("dac's base label for qemu domains is %q, want +64055:+994", got)
	}
	if models[0].BaseLabels != nil {
		t.Errorf("apparmor has base labels %v, want none", models[0].BaseLabels)
	}
}
