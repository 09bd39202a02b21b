//! Jobs: long-running clone/image/restore work in worker threads that report progress over a
//! channel and can be cancelled, shared by the CLI, the unattended runner and the TUI.
