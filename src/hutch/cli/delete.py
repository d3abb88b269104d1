"""hutch delete [--force] ID

Delete a container: its processes, cgroup, mounts and state.  --force (-f) also
kills a running container; deleting a container that is already gone with --force
succeeds."""

from . import args

SPEC = {"--force": ("force", "bool"), "-f": ("force", "bool")}


def run(g, argv):
    from ..container.lifecycle import delete
    o, pos = args.parse(argv, SPEC, "delete")
    for cid in pos or [args.one_id(pos, "delete")]:
        delete(g.root, cid, o["force"])
    return 0
