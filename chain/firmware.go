package chain

// Firmware is the state a domain keeps outside its disks, copied into the
// backup's folder beside them.
type Firmware struct {
	// NVRAM is the UEFI variables file (the domain's <nvram>): its boot
	// entries, Secure Boot keys and settings.
	NVRAM *Blob `json:"nvram,omitempty"`
}

// Blob is one file of a backup besides its disk images.
type Blob struct {
	File   string `json:"file"`   // relative to the backup's folder
	Source string `json:"source"` // where it was read, on the domain's host
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // of its content, hex
}
