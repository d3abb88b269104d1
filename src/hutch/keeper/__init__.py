"""The per-container keeper: one small process, started by ``create`` only for a
container that asks for it, that outlives the verb and serves what needs a live
process after it has returned (a detached container's pty and log pipes, its
/dev/log socket, the FUSE views of /proc and /sys); see docs/design.md, "The
keeper".  Its modules import nothing heavy, since the CLI (``hutch logs``) reads
the same files."""
