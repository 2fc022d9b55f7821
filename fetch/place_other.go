//go:build !linux

package fetch

// renameNoReplace renames old to new unless new exists; without
// renameat2, it checks first, then renames.
func renameNoReplace(old, new string) error { return checkedRename(old, new) }
