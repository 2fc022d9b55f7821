package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"

	"vbackup/chain"
)

// verifyFirmware checks the UEFI variables a backup keeps against the
// checksum its manifest recorded; ok is false when it keeps none. It is
// reported as disk "nvram".
func verifyFirmware(b *chain.Backup) (Checked, bool) {
	if b.Firmware == nil || b.Firmware.NVRAM == nil {
		return Checked{}, false
	}
	n := b.Firmware.NVRAM
	res := Checked{Backup: b.Name(), Disk: "nvram", Checksum: "sha256:" + n.SHA256}
	f, err := os.Open(filepath.Join(b.Dir, n.File))
	if err != nil {
		res.Status, res.Detail = "error", err.Error()
		return res, true
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		res.Status, res.Detail = "error", err.Error()
		return res, true
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != n.SHA256 {
		res.Status, res.Found, res.Detail = "damaged", "sha256:"+got, "the UEFI variables file differs from what the backup recorded"
		return res, true
	}
	res.Status = "ok"
	return res, true
}
