module vbackup

go 1.26.8

require (
	github.com/antchfx/xpath v1.3.9
	github.com/urfave/cli/v3 v3.14.0
	libvirt.org/go/libvirt v1.12007.0
	libvirt.org/go/libvirtxml v1.12008.0
)
