package engine

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/virt"
)

// A backup folder has an identity of its own, so that two folders of one
// domain (a local chain and an offsite one, two backup hosts) keep two
// chains that never touch: each backup records it in its manifest, and
// each checkpoint vbackup makes carries it in its name and description.
// A folder builds on, prunes and deletes only the checkpoints that are
// its own: of one of its backups' names, with its mark, created when that
// backup's was. Names alone are not enough: two folders backed up within
// the same second would otherwise name their checkpoints alike, and the
// one's pruning would delete the other's.

// folderIDBytes is the size of a folder's identity: 8 hex digits, short
// enough to read in a checkpoint's name; the description and creation
// time tell two folders apart should two ever draw the same.
const folderIDBytes = 4

// folderIdentity is the identity of the store's folder: the one its
// newest backup records, or a new one for a folder that has none yet
// (a new folder, or one written before folders had one).
func folderIdentity(s *chain.Store) (string, error) {
	if last := s.Last(); last != nil && last.Folder != "" {
		return last.Folder, nil
	}
	var b [folderIDBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making an identity for %s: %w", s.Dir, err)
	}
	return hex.EncodeToString(b[:]), nil
}

// checkpointBase is the name of a checkpoint made at now for folder id,
// before it is made unique.
func checkpointBase(now time.Time, id string) string {
	return "vbackup-" + now.UTC().Format("20060102T150405Z") + "-" + id
}

// checkpointDescription is the description of the checkpoints made for
// folder id at dir: what checkpoint-list shows, and the mark ownership
// is read from.
func checkpointDescription(dir, id string) string {
	return fmt.Sprintf("vbackup backup into %s (folder %s)", dir, id)
}

// folderMark is the identity a checkpoint's description names, or "".
func folderMark(description string) string {
	i := strings.LastIndex(description, "(folder ")
	if i < 0 || !strings.HasSuffix(description, ")") {
		return ""
	}
	return description[i+len("(folder ") : len(description)-1]
}

// notOwn says why libvirt's checkpoint cp, of the name of backup kept, is
// not the checkpoint that backup made; "" when it is. A backup written
// before folders had an identity is judged by its creation time alone.
func notOwn(cp virt.Checkpoint, kept *chain.Backup) string {
	if kept.Folder != "" {
		switch mark := folderMark(cp.Description); {
		case mark == "":
			return fmt.Sprintf("libvirt's checkpoint %s was not made by vbackup for this folder (its description: %q)", cp.Name, cp.Description)
		case mark != kept.Folder:
			return fmt.Sprintf("libvirt's checkpoint %s belongs to another backup folder (%s), not to this one (folder %s)", cp.Name, cp.Description, kept.Folder)
		}
	}
	want, ok := createdAt(kept.Checkpoint.XML)
	if !ok {
		return ""
	}
	if !cp.Created.Equal(want) {
		return fmt.Sprintf("libvirt's checkpoint %s was created %s, and backup %s's at %s: it is another checkpoint of the same name",
			cp.Name, cp.Created.UTC().Format(time.RFC3339), kept.Name(), want.UTC().Format(time.RFC3339))
	}
	return ""
}

// createdAt is the creation time a checkpoint's XML records.
func createdAt(doc string) (time.Time, bool) {
	var cp libvirtxml.DomainCheckpoint
	if err := cp.Unmarshal(doc); err != nil || cp.CreationTime == "" {
		return time.Time{}, false
	}
	secs, err := strconv.ParseInt(cp.CreationTime, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(secs, 0), true
}
