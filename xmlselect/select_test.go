package xmlselect

import (
	"os/exec"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// checkpointXML is what `virsh -c test:///default "checkpoint-create-as test
// c1 --description hello; checkpoint-dumpxml test c1"` prints.
const checkpointXML = `<domaincheckpoint>
  <name>c1</name>
  <description>hello</description>
  <creationTime>1795548665</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='c1'/>
  </disks>
  <domain type='test'>
    <name>test</name>
    <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
    <memory unit='KiB'>8388608</memory>
    <currentMemory unit='KiB'>2097152</currentMemory>
    <vcpu placement='static'>2</vcpu>
    <os>
      <type arch='i686'>hvm</type>
      <boot dev='hd'/>
    </os>
    <clock offset='utc'/>
    <on_poweroff>destroy</on_poweroff>
    <on_reboot>restart</on_reboot>
    <on_crash>destroy</on_crash>
    <devices>
      <disk type='file' device='disk'>
        <source file='/guest/diskimage1'/>
        <target dev='vda' bus='virtio'/>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </disk>
      <interface type='network'>
        <mac address='aa:bb:cc:dd:ee:ff'/>
        <source network='default'/>
        <target dev='testnet0'/>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
      </interface>
      <memballoon model='virtio'>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
      </memballoon>
    </devices>
  </domain>
</domaincheckpoint>
`

// The same with --no-domain.
const checkpointNoDomainXML = `<domaincheckpoint>
  <name>c1</name>
  <description>hello</description>
  <creationTime>1795549367</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='c1'/>
  </disks>
</domaincheckpoint>
`

// otherXML exercises escaping, namespaces, mixed content and libxml2's
// blank-text heuristic; the expectations were checked against libxml2 2.9.14
// driven the way virsh drives it.
const otherXML = `<r xmlns:a="http://a/" a:x="1" y='q"uote' z="t&#9;ab&#10;nl lit
nl" w="&lt;&gt;&amp;é">
  <a:el xmlns:b="http://b/"><b:in a:at="v">t</b:in></a:el>
  <t>a&gt;b&lt;c&amp;d"e'f é&#13;</t>
  <mixed>hello <b>bold</b>  <i>it</i> tail</mixed>
  <m2><x/>  <y/>  text<z/>  <w/></m2>
  <m5>   </m5>
  <cm><!-- note --><x/></cm>
  <cd><![CDATA[a<b>]]></cd>
</r>`

func TestSelect(t *testing.T) {
	diskWrapped := `<nodes>
  <disk name="vda" checkpoint="bitmap" bitmap="c1"/>
  <disk type="file" device="disk">
    <source file="/guest/diskimage1"/>
    <target dev="vda" bus="virtio"/>
    <address type="pci" domain="0x0000" bus="0x01" slot="0x00" function="0x0"/>
  </disk>
</nodes>`
	domainDisk := `<disk type="file" device="disk">
  <source file="/guest/diskimage1"/>
  <target dev="vda" bus="virtio"/>
  <address type="pci" domain="0x0000" bus="0x01" slot="0x00" function="0x0"/>
</disk>`
	tests := []struct {
		name, doc, expr string
		wrap            bool
		want            string
	}{
		{"no-domain disk", checkpointNoDomainXML, "//disk", false,
			`<disk name="vda" checkpoint="bitmap" bitmap="c1"/>`},
		{"attribute", checkpointXML, "//disk/@name", false, ` name="vda"`},
		{"text nodes", checkpointXML, "//name/text()", false, "c1\ntest"},
		{"two disks", checkpointXML, "//disk", false,
			`<disk name="vda" checkpoint="bitmap" bitmap="c1"/>` + "\n" + domainDisk},
		{"two disks wrapped", checkpointXML, "//disk", true, diskWrapped},
		{"multi-line element", checkpointXML, "//domain/devices/disk", false, domainDisk},
		{"os", checkpointXML, "//os", false,
			"<os>\n  <type arch=\"i686\">hvm</type>\n  <boot dev=\"hd\"/>\n</os>"},
		{"no match", checkpointXML, "//nothing", false, ""},
		{"no match wrapped", checkpointXML, "//nothing", true, "<nodes/>"},
		{"union in document order", checkpointXML, "//description | //name", false,
			"<name>c1</name>\n<description>hello</description>\n<name>test</name>"},
		{"attributes wrapped", checkpointXML, "//disk/@*", true,
			`<nodes name="vda" checkpoint="bitmap" bitmap="c1" type="file" device="disk"/>`},
		{"same-name attributes wrapped: last wins", checkpointXML, "//target/@dev", true,
			`<nodes dev="testnet0"/>`},
		{"text wrapped", checkpointXML, "//name/text()", true, "<nodes>c1test</nodes>"},
		{"document", checkpointNoDomainXML, "/", false, `<?xml version="1.0" encoding="UTF-8"?>
<domaincheckpoint>
  <name>c1</name>
  <description>hello</description>
  <creationTime>1795549367</creationTime>
  <disks>
    <disk name="vda" checkpoint="bitmap" bitmap="c1"/>
  </disks>
</domaincheckpoint>
`},
		{"attribute escaping", otherXML, "/r/@*", false,
			` a:x="1"` + "\n" + ` y="q&quot;uote"` + "\n" +
				` z="t&#9;ab&#10;nl lit nl"` + "\n" + ` w="&lt;&gt;&amp;&#xE9;"`},
		{"text escaping", otherXML, "//t", false, `<t>a&gt;b&lt;c&amp;d"e'f é&#13;</t>`},
		{"namespaces as written", otherXML, "//*[local-name()='in']", false,
			`<b:in a:at="v">t</b:in>`},
		{"namespaces wrapped", otherXML, "//*[local-name()='el']", true,
			"<nodes>\n  <a:el xmlns:b=\"http://b/\" xmlns:a=\"http://a/\">\n    <b:in a:at=\"v\">t</b:in>\n  </a:el>\n</nodes>"},
		{"mixed content inline", otherXML, "//mixed", false,
			"<mixed>hello <b>bold</b>  <i>it</i> tail</mixed>"},
		{"blank text after text kept", otherXML, "//m2", false,
			"<m2><x/><y/>  text<z/>  <w/></m2>"},
		{"blank-only element kept", otherXML, "//m5", false, "<m5>   </m5>"},
		{"comment indented", otherXML, "//cm", false, "<cm>\n  <!-- note -->\n  <x/>\n</cm>"},
		{"cdata", otherXML, "//cd/text()", false, "<![CDATA[a<b>]]>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Select(tt.doc, tt.expr, tt.wrap)
			if err != nil {
				t.Fatalf("Select(%q, wrap=%v): %v", tt.expr, tt.wrap, err)
			}
			if got != tt.want {
				t.Errorf("Select(%q, wrap=%v) =\n%s\nwant\n%s", tt.expr, tt.wrap, got, tt.want)
			}
		})
	}
}

func TestSelectErrors(t *testing.T) {
	tests := []struct {
		expr string
		want []string // substrings of the error
	}{
		{"string(//name)", []string{"'string(//name)'", "must select nodes"}},
		{"count(//disk)", []string{"'count(//disk)'", "must select nodes"}},
		{"1=1", []string{"'1=1'", "must select nodes"}},
		{"//disk[", []string{"'//disk['", "invalid"}},
		{"//foo:bar", []string{"'//foo:bar'", "foo"}},
		{"", []string{"''"}},
		{"//processing-instruction()", []string{"not supported"}},
		{"//disk/namespace::*", []string{"not supported"}},
	}
	for _, tt := range tests {
		for _, wrap := range []bool{false, true} {
			got, err := Select(checkpointXML, tt.expr, wrap)
			if err == nil {
				t.Errorf("Select(%q, wrap=%v) = %q, want an error", tt.expr, wrap, got)
				continue
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Select(%q) error %q does not mention %q", tt.expr, err, s)
				}
			}
		}
	}
	if _, err := Select("<a><b></a>", "//a", false); err == nil {
		t.Error("malformed document: no error")
	}
}

// virshOutputs runs setup, then "<dump>" and "<dump> --xpath EXPR [--wrap]"
// for each expression in one virsh process of the test driver (whose state
// lives in that process). It returns the full XML and each command's output.
func virshOutputs(t *testing.T, setup, dump string, exprs []string, wrap bool) (string, []string) {
	t.Helper()
	testbed.Need(t, "virsh")
	virsh, _ := exec.LookPath("virsh")
	const sep = "@@XMLSELECT-SEP@@"
	cmds := []string{setup, dump}
	for _, e := range exprs {
		if strings.Contains(e, "'") {
			t.Fatalf("expression %q: single quotes are not supported here", e)
		}
		c := "echo " + sep + "; " + dump + " --xpath '" + e + "'"
		if wrap {
			c += " --wrap"
		}
		cmds = append(cmds, c)
	}
	cmd := exec.Command(virsh, "-q", "-c", "test:///default", strings.Join(cmds, "; "))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("virsh: %v\n%s", err, stderr.String())
	}
	parts := strings.Split(string(out), sep)
	if len(parts) != len(exprs)+1 {
		t.Fatalf("virsh printed %d sections, want %d:\n%s", len(parts), len(exprs)+1, out)
	}
	// echo's own newline, if this virsh prints one, is not part of the output.
	full := strings.TrimSuffix(parts[0], "\n") + "\n"
	res := parts[1:]
	for i := range res {
		res[i] = strings.TrimPrefix(res[i], "\n")
	}
	return full, res
}

func compareWithVirsh(t *testing.T, setup, dump string, exprs []string) {
	for _, wrap := range []bool{false, true} {
		full, outs := virshOutputs(t, setup, dump, exprs, wrap)
		for i, e := range exprs {
			got, err := Select(full, e, wrap)
			if err != nil {
				t.Errorf("Select(%q, wrap=%v): %v", e, wrap, err)
				continue
			}
			// virsh -q prints result+"\n", or nothing when no node matched.
			if got != "" || wrap {
				got += "\n"
			}
			if got != outs[i] {
				t.Errorf("%s --xpath %q (wrap=%v):\ngot\n%s\nvirsh printed\n%s", dump, e, wrap, got, outs[i])
			}
		}
	}
}

func TestMatchesVirshCheckpoint(t *testing.T) {
	setup := `checkpoint-create-as test c1 --description "a<b> & \"q\" >x"`
	compareWithVirsh(t, setup, "checkpoint-dumpxml test c1", []string{
		"//disk",
		"//disk/@name",
		"//name/text()",
		"//os",
		"//domain/devices/disk",
		"//nothing",
		"//description | //name",
		"//description",
		"//description/text()",
		"/",
		"//disk/@*",
		"//target/@dev",
		`//*[@type="pci"]`,
		"//devices/*",
		"//name/text() | //disks",
		"//domain",
	})
}

func TestMatchesVirshMetadata(t *testing.T) {
	setup := `metadata test --uri http://example.org/app --key app --set '<foo a="1&amp;2" b="x"><bar>t</bar><baz/></foo>'`
	compareWithVirsh(t, setup, "dumpxml test", []string{
		"//metadata",
		"//metadata/*",
		"//metadata//*",
		"//metadata//@*",
		`//*[local-name()="bar"]`,
	})
}
