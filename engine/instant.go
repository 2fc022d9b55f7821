package engine

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/progress"
	"vbackup/qcow2"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// InstantRequest is one instant restore: a new domain running on thin
// overlays backed by a backup's chain.
type InstantRequest struct {
	From   string   // the backup folder
	At     string   // a backup name, or latest
	To     string   // where the overlays go, absolute
	Disks  []string // only these; all by default
	Define string   // the new domain's name (required)
	Start  bool     // boot it once defined
	Conn   virt.Conn
	Now    func() time.Time
}

// Instant is what an instant restore set up.
type Instant struct {
	Backup   *chain.Backup
	Disks    []InstantDisk
	Domain   string
	Started  bool
	QEMUUser string        // who the overlays belong to
	Grants   []chain.Grant // read access given to QEMUUser in the backup folder
}

// InstantDisk is one overlay and the backup image under it.
type InstantDisk struct {
	Name, Overlay, Backing string
	Size                   uint64
}

// instantNS names vbackup's element in an instant restore's definition: it
// tells --finish which folder the domain reads from.
const instantNS = "urn:vbackup:instant:1"

type instantMeta struct {
	XMLName xml.Name `xml:"urn:vbackup:instant:1 instant"`
	Dir     string   `xml:"dir,attr"`
	Backup  string   `xml:"backup,attr"`
}

// InstantRestore defines (and, asked, starts) a domain whose disks are new
// qcow2 overlays in req.To, backed by the images of backup req.At: it runs
// at once, whatever its disks' size, writing only into its overlays. The
// folder records that the domain reads that point, so that prune keeps it,
// until 'restore --finish' has copied the data into the overlays. Every
// check is made before anything is written; a failure takes back all it
// did.
func InstantRestore(ctx context.Context, req InstantRequest, notes progress.Notifier) (Instant, error) {
	var out Instant
	if req.Define == "" {
		return out, fmt.Errorf("an instant restore runs a new domain: name it with --define NAME")
	}
	// The overlays name the backup images by absolute path, and the
	// record and the domain's metadata name the folder the same way.
	from, err := filepath.Abs(req.From)
	if err != nil {
		return out, err
	}
	req.From = from
	if _, err := OpenFolder(req.From); err != nil {
		return out, err
	}
	// Shared with other readers, excluding a prune: the record below is in
	// the folder before any prune can look.
	unlock, err := chain.LockReading(req.From)
	if err != nil {
		return out, err
	}
	defer unlock()
	store, err := OpenFolder(req.From)
	if err != nil {
		return out, err
	}
	if store.RemovalLeft() {
		return out, fmt.Errorf("an interrupted prune left a removal half done in %s, which rewrites images a domain would read: run 'vbackup prune --from %s' with your policy first", req.From, req.From)
	}
	b, err := store.Find(req.At)
	if err != nil {
		return out, err
	}
	out.Backup = b
	plan, err := restoreDisks(b, RestoreRequest{Disks: req.Disks, Format: "qcow2", To: req.To})
	if err != nil {
		return out, err
	}
	switch _, err := req.Conn.Domain(ctx, req.Define); {
	case err == nil:
		return out, fmt.Errorf("--define %s: a domain of that name exists already; choose another name", req.Define)
	case !errors.Is(err, virt.ErrNoDomain):
		return out, err
	}
	if _, ok, err := chain.FindInUse(req.From, req.Define); err != nil {
		return out, err
	} else if ok {
		return out, fmt.Errorf("%s records that a domain %s reads from it already; finish or release that one first ('vbackup restore --finish %s --from %s')", req.From, req.Define, req.Define, req.From)
	}
	// Under libvirt's DAC driver, starting the domain would chown the
	// backups below its overlays to QEMU's user for good (see
	// xmlgen.RestoredDisk.Backup).
	models, err := req.Conn.SecurityModels(ctx)
	if err != nil {
		return out, err
	}
	dac := slices.ContainsFunc(models, func(m virt.SecurityModel) bool { return m.Name == "dac" })
	rec := chain.InUse{Domain: req.Define, URI: req.Conn.URI(), Backup: b.Name(), Started: req.Now().UTC()}
	var files []string
	seen := map[string]bool{}
	for _, d := range plan {
		if _, err := os.Lstat(d.Path); err == nil {
			return out, fmt.Errorf("%s exists already; vbackup never writes over a file: move it away or restore into another folder", d.Path)
		}
		links, err := store.Chain(b, d.Name)
		if err != nil {
			return out, err
		}
		for _, l := range links {
			ld, _ := l.Disk(d.Name)
			files = append(files, l.File(ld))
			if !seen[l.Name()] {
				seen[l.Name()] = true
				rec.Chain = append(rec.Chain, l.Name())
			}
		}
		md, _ := b.Disk(d.Name)
		out.Disks = append(out.Disks, InstantDisk{Name: d.Name, Overlay: d.Path, Backing: b.File(md), Size: md.VirtualSize})
		rec.Disks = append(rec.Disks, chain.InUseDisk{Name: d.Name, Overlay: d.Path, Backing: b.File(md)})
	}
	sortChain(store, rec.Chain)
	nvram, err := nvramTarget(b, req.Define, req.To)
	if err != nil {
		return out, err
	}
	owner, err := qemuAccount(models, b.Domain.XML, req.To)
	if err != nil {
		return out, err
	}
	out.QEMUUser = owner.name

	// From here on, each step is undone if a later one fails.
	var undo []func()
	fail := func(err error) (Instant, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return out, err
	}
	if _, err := os.Stat(req.To); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(req.To, 0o755); err != nil {
			return fail(err)
		}
		undo = append(undo, func() { os.Remove(req.To) })
		if err := os.Chown(req.To, owner.uid, owner.gids[0]); err != nil {
			return fail(err)
		}
	}
	// Held until the record is written and the domain defined, or all is
	// undone: the grants others made are read, shared and recorded as one.
	unlockRecords, err := chain.LockInUse(store.Dir)
	if err != nil {
		return fail(err)
	}
	defer unlockRecords()
	if os.Geteuid() == 0 && owner.uid != 0 {
		shared, err := sharedGrants(store.Dir)
		if err != nil {
			return fail(err)
		}
		if out.Grants, err = openTo(owner, store.Dir, files, shared); err != nil {
			return fail(err)
		}
		undo = append(undo, func() { _ = revokeUnshared(store.Dir, req.Define, out.Grants) })
	}
	rec.Grants = out.Grants
	for _, d := range out.Disks {
		// Absolute: the overlay lives outside the folder. The backing
		// format is said, so nothing probes a backup image's format.
		w, err := qcow2.Create(d.Overlay, d.Size, qcow2.Options{Backing: d.Backing, BackingFormat: "qcow2"})
		if err != nil {
			return fail(fmt.Errorf("creating the overlay of disk %s: %w", d.Name, err))
		}
		if err := w.Close(); err != nil {
			os.Remove(d.Overlay)
			return fail(fmt.Errorf("creating the overlay of disk %s: %w", d.Name, err))
		}
		path := d.Overlay
		undo = append(undo, func() { os.Remove(path) })
		if os.Geteuid() == 0 {
			if err := os.Chown(path, owner.uid, owner.gids[0]); err != nil {
				return fail(err)
			}
		}
	}
	if err := chain.WriteInUse(store.Dir, rec); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { _ = chain.RemoveInUse(store.Dir, rec.Domain) })

	images := map[string]xmlgen.RestoredDisk{}
	for _, d := range out.Disks {
		images[d.Name] = xmlgen.RestoredDisk{Path: d.Overlay, Format: "qcow2", Backup: dac}
	}
	doc, filled, err := xmlgen.RestoredDomain(b.Domain.XML, req.Define, images)
	if err != nil {
		return fail(fmt.Errorf("backup %s: %w", b.Name(), err))
	}
	if doc, err = withInstantMeta(doc, instantMeta{Dir: store.Dir, Backup: b.Name()}); err != nil {
		return fail(err)
	}
	if doc, filled, err = restoreNVRAM(b, nvram, owner, doc, filled); err != nil {
		return fail(err)
	}
	if nvram != "" {
		undo = append(undo, func() { os.Remove(nvram) })
	}
	for _, n := range filled {
		notes.Notef("note: %s", n)
	}
	dom, err := req.Conn.DefineDomain(ctx, doc)
	if err != nil {
		return fail(fmt.Errorf("defining domain %s: %w", req.Define, err))
	}
	undo = append(undo, func() { _ = undefine(dom) })
	out.Domain = dom.Name()
	if rec.UUID, err = dom.UUID(ctx); err != nil {
		return fail(err)
	}
	if err := chain.WriteInUse(store.Dir, rec); err != nil {
		return fail(err)
	}
	if err := definedTPM(ctx, b, dom, notes); err != nil {
		return fail(err)
	}
	if req.Start {
		if err := dom.Boot(ctx); err != nil {
			return fail(fmt.Errorf("starting domain %s: %w; nothing was kept", req.Define, err))
		}
		out.Started = true
	}
	return out, nil
}

// undefine takes back a domain an instant restore defined, when a later
// step failed: only its definition goes, as none of it ran.
func undefine(dom virt.Domain) error {
	return dom.Undefine(context.Background())
}

// sortChain puts backup names in the store's order.
func sortChain(store *chain.Store, names []string) {
	pos := map[string]int{}
	for i, b := range store.Backups {
		pos[b.Name()] = i
	}
	for i := 1; i < len(names); i++ {
		for j := i; j > 0 && pos[names[j]] < pos[names[j-1]]; j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
}

// withInstantMeta adds vbackup's element to a definition's <metadata>.
func withInstantMeta(doc string, m instantMeta) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		return "", err
	}
	el, err := xml.Marshal(m)
	if err != nil {
		return "", err
	}
	if dom.Metadata == nil {
		dom.Metadata = &libvirtxml.DomainMetadata{}
	}
	dom.Metadata.XML += string(el)
	return dom.Marshal()
}

// readInstantMeta finds vbackup's element in a definition; ok is false
// when the domain is not an instant restore.
func readInstantMeta(doc string) (instantMeta, bool, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		return instantMeta{}, false, err
	}
	if dom.Metadata == nil {
		return instantMeta{}, false, nil
	}
	dec := xml.NewDecoder(strings.NewReader("<m>" + dom.Metadata.XML + "</m>"))
	for {
		tok, err := dec.Token()
		if err != nil {
			return instantMeta{}, false, nil
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Space == instantNS && se.Name.Local == "instant" {
			var m instantMeta
			if err := dec.DecodeElement(&m, &se); err != nil {
				return instantMeta{}, false, err
			}
			return m, m.Dir != "", nil
		}
	}
}
