package engine

import (
	"context"

	"vbackup/job"
)

// Quiescing: whether the guest's filesystems are frozen while the job
// starts is decided as the backup is prepared, so that --quiesce yes on a
// guest whose agent does not answer fails before anything changes; the
// freeze itself is job.Begin's, around BackupBegin.

// checkQuiesce asks the guest agent, as req.Quiesce says.
func (b *Backup) checkQuiesce(ctx context.Context) error {
	var err error
	b.freeze, err = job.CheckQuiesce(ctx, b.dom, b.req.Quiesce)
	return err
}

// announceQuiesce says whether the backup will be frozen, and why.
func (b *Backup) announceQuiesce() {
	if b.freeze.Note != "" {
		b.notes.Infof("%s", b.freeze.Note)
	}
}

// frozenPlan is the job's plan, with the guest's freeze.
func (b *Backup) frozenPlan(ctx context.Context) (job.Plan, error) {
	plan, err := b.plan(ctx)
	plan.Freeze = b.freeze
	return plan, err
}
