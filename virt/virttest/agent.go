package virttest

import (
	"testing"

	"vbackup/virt"
)

// agentRules asserts what the guest agent calls do: a domain without an
// agent refuses them with ErrNoAgent; a guest whose agent answers can be
// frozen once, pinged while frozen, and thawed (a thaw of what is not
// frozen succeeds).
func agentRules(t *testing.T, fresh func(t *testing.T) Subject) {
	t.Run("NoAgent", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		err := dom.PingAgent(bg)
		wantErr(t, "PingAgent without an agent", err, virt.ErrNoAgent)
		if testDriver(s) {
			return // which freezes its own default domain's made-up filesystems
		}
		wantErr(t, "PingAgent without an agent", err, virt.ErrNoAgent, "QEMU guest agent is not configured")
		wantErr(t, "FreezeFS without an agent", dom.FreezeFS(bg), virt.ErrNoAgent, "QEMU guest agent is not configured")
		wantErr(t, "ThawFS without an agent", dom.ThawFS(bg), virt.ErrNoAgent, "QEMU guest agent is not configured")
	})

	t.Run("FreezeThaw", func(t *testing.T) {
		s := fresh(t)
		if s.Guest == nil {
			return // no guest with an agent on this implementation
		}
		dom, err := s.Conn.Domain(bg, s.Guest(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := dom.PingAgent(bg); err != nil {
			t.Fatalf("PingAgent: %v", err)
		}
		if err := dom.FreezeFS(bg); err != nil {
			t.Fatalf("FreezeFS: %v", err)
		}
		thawed := false
		t.Cleanup(func() {
			if !thawed {
				_ = dom.ThawFS(bg)
			}
		})
		if err := dom.PingAgent(bg); err != nil {
			t.Errorf("PingAgent while frozen: %v", err)
		}
		wantErr(t, "FreezeFS while frozen", dom.FreezeFS(bg), nil, "the agent is in frozen state")
		if err := dom.ThawFS(bg); err != nil {
			t.Fatalf("ThawFS: %v", err)
		}
		thawed = true
		if err := dom.ThawFS(bg); err != nil {
			t.Errorf("ThawFS of a thawed guest: %v", err)
		}
	})
}
