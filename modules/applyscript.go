package modules

// ScriptApply is a change's Apply as one POSIX sh script, so that the runner
// can send it in the same round trip as the change's backup record: the
// record is written first, then Files, then Script runs, then the state
// after is recorded.
type ScriptApply struct {
	// Files are written before Script runs, each to its Path (a temporary
	// name the script renames into place).
	Files []ScriptFile
	// Script applies the change: commands joined by && (its status is its
	// last command's; 0 means applied). It runs in the recorder's shell, so
	// it must not exit, set shell options or read its stdin.
	Script string
	// Then is set by the runner, not the module: read-only commands run in
	// the same round trip once Script has succeeded and its outcome is
	// recorded (the checks of the steps after). Like Script it must not
	// exit; its output and status are the recorder's ScriptOutcome.Then.
	Then string
	// Confined tells that Script changes the host nowhere but at the Dest
	// of each of Files (and in its temporary files, which it renames or
	// removes): the runner then tells what the checks after it will find
	// of other paths from what they found before.
	Confined bool
	// Dirs are directories Script makes, with the shell's owner and group
	// and their Mode's permission bits exactly (mkdir -m or chmod). The
	// recorder records their state after from these where the host agrees
	// (owner, group and special bits, read with shell builtins).
	Dirs []ScriptDir
	// Links are symlinks Script makes (or replaces), each pointing at its
	// Target: the recorder takes a link's hash after from Target rather
	// than read the link back (three programs less per link).
	Links []ScriptLink
	// Before is what the check read of some of the change's Files: the
	// recorder snapshots such a file from it, with shell builtins instead
	// of cat and stat, where the host still agrees (the same content, and
	// owned by the shell's user and group). The mode is the check's.
	Before []ScriptBefore
}

// ScriptBefore is a regular file as a check read it.
type ScriptBefore struct {
	Path string
	Data []byte
	Mode uint32 // permission and setuid/setgid/sticky bits
}

// ScriptLink is a symlink a ScriptApply makes.
type ScriptLink struct {
	Path   string
	Target string
	// Own tells that Script leaves the link as the shell made it (no
	// chown): the recorder then takes its owner from the shell's ids
	// rather than stat it, where its directory passes no group on.
	Own bool
}

// ScriptDir is a directory a ScriptApply makes.
type ScriptDir struct {
	Path string
	Mode uint32 // permission and setuid/setgid/sticky bits
}

// ScriptFile is content a ScriptApply writes to the host.
type ScriptFile struct {
	Path string
	Data []byte
	// Mode's read and write bits are the file's when it is created; other
	// bits need a chmod in Script.
	Mode uint32
	// Dest, when set, is where Script renames Path, unchanged: after it
	// succeeds, Dest is a regular file holding Data, with mode DestMode.
	// The recorder then records Dest's state after from these rather than
	// read it back (two programs less per change).
	Dest     string
	DestMode uint32
}

// ScriptApplier is a module whose Apply can be a ScriptApply. The runner
// calls Apply instead where it cannot use the script (no recorder, or the
// recorder cannot run it).
type ScriptApplier interface {
	// ApplyScript returns the script that applies ch, as Apply would, or
	// nil when this change needs Apply.
	ApplyScript(ch *Change) *ScriptApply
	// ScriptApplied tells the module that its script succeeded, as a nil
	// error from Apply would.
	ScriptApplied()
}
