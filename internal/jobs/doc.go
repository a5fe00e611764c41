// Package jobs drives every reimage and reboot of a machine as one persistent, crash-safe state
// machine. A job succeeds only on proof (the power state read back, the server's own check of
// the agent's result, the booted machine answering its readiness probe or checking in with the
// image it was given): "command sent" is never success.
//
// # Phases
//
// A reimage (default timeouts for real hardware; LabConfig for QEMU under TCG):
//
//	queued       24h  waits for a slot: PerChassis, and LinkBytesPerSecond/MinBytesPerSecond writes
//	  │                on the link; oldest first, a full chassis does not hold up other chassis
//	fencing      3m   power off, read back Off                          BMC calls retried
//	boot-set     2m   next boot: network, once                          BMC calls retried
//	powering-on  3m   forget the current image, assign the job's one,   retried
//	  │               power on, read back On
//	netbooting   10m  DHCP, iPXE script, agent hello (sub-steps timed)  lost: power cycle
//	writing      2h   the agent's progress; silent for AgentSilence     lost: power cycle
//	  │               (3m) ⇒ lost
//	verifying    —    the machine record says the image is current (only inventory.RecordResult,
//	  │               the server's check of the agent's result, makes it so)
//	rebooting    5m   off (read back), next boot: disk, once, on (read back); each sub-step
//	  │               committed before it is done                       BMC calls retried
//	booting-os   30m  until the probe passes (tcp connect, http status) and/or the OS checks in
//	  │               with the job's digest; a check-in with another digest fails the job (stale)
//	ready        —    the machine record still shows the image assigned and current
//	succeeded
//
// A reboot is queued → rebooting (off, on; no boot override) → booting-os → ready → succeeded;
// it needs no slot. Any phase may end in failed (Job.Phase is the phase that failed, Job.Reason
// says why) or cancelled. verifying and ready decide from the machine record at once and do not
// wait, so they cannot time out.
//
// Retries: a failed BMC call (or catalog update) is tried 1+Retries times (default 4) with a
// doubling pause, within its phase's deadline; the attempts are stored, so a daemon in a crash
// loop does not retry for ever. A machine that does not netboot, or whose agent goes silent, is
// power-cycled back through fencing up to Cycles times (default 2), then the job fails. A
// refused or failed write is not retried: it fails at verifying.
//
// # What a failure or a cancel does to the machine
//
// The record never claims an image the disk does not hold: powering-on clears the machine's
// current image before the machine can run the agent, and only the server's check of the
// agent's result sets it again.
//
//   - Queued: nothing was touched. Fencing, boot-set: the disk was not touched and the record
//     still names its image; the machine is left as the job left it (off, once fenced). Cancel
//     never powers a machine on.
//   - Powering-on to verifying: the disk holds a partial or unverified image, the agent runs or
//     may run. The job goes through a stopping step (itself committed, so a restart finishes
//     it) that powers the machine off and reads it back off, then ends; the machine is never
//     booted from that disk. Config.LeaveFailedOn leaves a failed machine in the agent for
//     inspection instead; a cancel powers it off regardless.
//   - Rebooting, booting-os, ready: the image is verified on disk and recorded; the job stops
//     watching and the machine is left as it is.
//
// # Crash safety
//
// Every transition is committed (Store.PutJob, one fsync) before it is acted on, with the
// absolute deadline of the phase it enters. Run drives the unfinished jobs on from their
// committed phase, and every phase is idempotent:
//
//   - queued: waits, with its original deadline.
//   - fencing, powering-on, rebooting, stopping: read the power state first and do only what is
//     missing; boot-set and the boot override of rebooting are set again; the assignment is
//     recorded again.
//   - netbooting, writing: look at the machine record first (a result taken while the job was
//     not watching made the image current), then wait for the agent, which keeps running and
//     sends its hello, progress and result again; writing gives a reconnecting agent a full
//     AgentSilence window, within the phase's deadline.
//   - verifying, ready: decide from the machine record.
//   - booting-os: probes again; check-ins are stored, so one that came before the restart counts.
//
// # Who imports it
//
// The package sees the rest of imaged through small interfaces it declares (Power, Catalog,
// Prober, Store), in terms of its own types, those of images and machines, and the leaf
// internal/power's (power.State, power.Action, power.BootTarget): it does not link the store (a
// deptest says so). cmd/imaged hands it the BMC fleet (internal/power/fleet) as Power, adapts the
// inventory to the others, passes the store, which implements Store, and feeds the Manager what
// the DHCP server, the boot handler and the agent API observe (Observe, CheckIn); internal/api
// calls Submit, Cancel, Get and List. Nothing else imports it.
package jobs
