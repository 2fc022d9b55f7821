package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v3"

	"vbackup/chain"
	"vbackup/contentsum"
)

type verifyOptions struct {
	From string
	At   string // a backup name, latest, or all
	JSON bool
}

func newVerifyCommand(env *Env, run func(context.Context, *Env, verifyOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "read every backup back and compare its content with its manifest",
		Description: "For each backup (or the one --at names) and each of its disks, reads the disk's\n" +
			"chain as a restore would, recomputes the content checksum and compares it with the\n" +
			"manifest; it also checks that each overlay's backing file is the one the manifest\n" +
			"names. A damaged backup is named, and so are the later backups built on it.\n" +
			"Exit status 1 when anything does not match.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`", Required: true},
			&cli.StringFlag{Name: "at", Usage: "verify only the backup `CHECKPOINT` (or latest); all by default", Value: "all"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per disk checked"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			if _, err := args(cmd); err != nil {
				return err
			}
			return run(ctx, env, verifyOptions{From: cmd.String("from"), At: cmd.String("at"), JSON: cmd.Bool("json")})
		},
	}
}

// verifyResult is one disk of one backup, checked.
type verifyResult struct {
	Backup   string `json:"backup"`
	Disk     string `json:"disk"`
	Status   string `json:"status"` // ok, damaged, depends (on a damaged backup), error
	Checksum string `json:"checksum"`
	Found    string `json:"found,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

func runVerify(ctx context.Context, env *Env, opts verifyOptions) error {
	store, err := openBackups(opts.From)
	if err != nil {
		return err
	}
	backups := store.Backups
	if opts.At != "all" {
		b, err := store.Find(opts.At)
		if err != nil {
			return err
		}
		backups = []*chain.Backup{b}
	}
	if len(backups) == 0 {
		return fmt.Errorf("%s holds no backups to verify", opts.From)
	}
	damaged := map[string]string{} // backup/disk: the damaged backup it is or builds on
	var bad []string
	checked := 0
	enc := json.NewEncoder(env.Stdout)
	for _, b := range backups {
		for _, d := range b.Disks {
			res := verifyDisk(ctx, store, b, d, damaged)
			checked++
			if res.Status != "ok" {
				bad = append(bad, fmt.Sprintf("%s (%s: %s)", b.Name(), d.Name, res.Status))
				if res.Status == "damaged" || res.Status == "error" {
					damaged[b.Name()+"/"+d.Name] = b.Name()
				}
			}
			if opts.JSON {
				if err := enc.Encode(res); err != nil {
					return err
				}
				continue
			}
			line := fmt.Sprintf("%-26s %-6s %-8s %s", res.Backup, res.Disk, res.Status, res.Checksum)
			if res.Detail != "" {
				line = fmt.Sprintf("%-26s %-6s %-8s %s", res.Backup, res.Disk, res.Status, res.Detail)
			}
			fmt.Fprintln(env.Stdout, line)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d disk images in %s do not match their manifests: %s", len(bad), checked, opts.From, strings.Join(bad, ", "))
	}
	if !opts.JSON {
		fmt.Fprintf(env.Stderr, "All %d disk images of %d backups match their manifests.\n", checked, len(backups))
	}
	return nil
}

// verifyDisk checks one disk of b. damaged maps backup/disk to the damaged
// backup it is, for the backups checked before.
func verifyDisk(ctx context.Context, store *chain.Store, b *chain.Backup, d chain.Disk, damaged map[string]string) verifyResult {
	res := verifyResult{Backup: b.Name(), Disk: d.Name, Checksum: d.Checksum}
	fail := func(status, detail string) verifyResult {
		res.Status, res.Detail = status, detail
		return res
	}
	links, err := store.Chain(b, d.Name)
	if err != nil {
		return fail("error", err.Error())
	}
	for _, l := range links[:len(links)-1] {
		if bad, ok := damaged[l.Name()+"/"+d.Name]; ok {
			return fail("depends", "builds on damaged backup "+bad)
		}
	}
	if d.Level == chain.Incremental {
		base, _ := store.Find(d.Backing)
		bd, _ := base.Disk(d.Name)
		want := filepath.Join("..", filepath.Base(base.Dir), bd.File)
		got, err := backingFile(ctx, b.File(d))
		if err != nil {
			return fail("error", err.Error())
		}
		if got != want {
			return fail("damaged", fmt.Sprintf("its backing file is %q, not %q", got, want))
		}
	}
	want, err := contentsum.Parse(d.Checksum)
	if err != nil {
		return fail("error", "the manifest's checksum: "+err.Error())
	}
	got, err := contentsum.File(ctx, b.File(d), d.Format, contentsum.Options{})
	if err != nil {
		return fail("error", err.Error())
	}
	if !got.Equal(want) {
		res.Found = got.String()
		return fail("damaged", "content is "+got.String())
	}
	res.Status = "ok"
	return res
}

// backingFile is the backing file name recorded in a qcow2 image.
func backingFile(ctx context.Context, path string) (string, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("%s: %s", path, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info struct {
		Backing string `json:"backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info.Backing, nil
}
