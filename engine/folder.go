package engine

import (
	"fmt"
	"os"

	"vbackup/chain"
)

// OpenFolder reads the backups in dir, which must be a folder: a typo in
// a path is not an empty folder.
func OpenFolder(dir string) (*chain.Store, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, notAFolder(dir)
	}
	return chain.Open(dir)
}

func notAFolder(dir string) error {
	return fmt.Errorf("%s is not a folder of backups (one that 'vbackup backup DOMAIN --to DIR' writes)", dir)
}
