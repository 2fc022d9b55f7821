// Package systemd holds vbackup's systemd units (vbackup@.service,
// vbackup@.timer, example.env), installed by make install. It has no code:
// its tests check the units with systemd's own verifier and run the
// service's script against a stand-in vbackup.
package systemd
