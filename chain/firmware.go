package chain

// Firmware is the state a domain keeps outside its disks, copied into the
// backup's folder beside them.
type Firmware struct {
	// NVRAM is the UEFI variables file (the domain's <nvram>): its boot
	// entries, Secure Boot keys and settings.
	NVRAM *Blob `json:"nvram,omitempty"`
	// TPM is the emulated TPM's state (swtpm's files): its keys, its
	// sealed secrets (a disk encryption key, say).
	TPM *TPM `json:"tpm,omitempty"`
}

// TPM is an emulated TPM's state folder, copied.
type TPM struct {
	Dir    string `json:"dir"`    // relative to the backup's folder
	Source string `json:"source"` // the state folder, on the domain's host
	Files  []Blob `json:"files"`
}

// Blob is one file of a backup besides its disk images.
type Blob struct {
	File   string `json:"file"`   // relative to the backup's folder
	Source string `json:"source"` // where it was read, on the domain's host
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // of its content, hex
}
