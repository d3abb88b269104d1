"""hutch checkpoint [options] ID

Checkpoint a running container with CRIU (>= 4.1, through its RPC).  Without
--leave-running the container stops and is deleted, as with runc.

options:
  --image-path DIR          where CRIU writes the images (default ./checkpoint)
  --work-path DIR           CRIU's logs and work files (default: the image path)
  --parent-path DIR         a previous (pre-)dump, relative to the image path
  --leave-running           keep the container running after the checkpoint
  --tcp-established         checkpoint established TCP connections
  --ext-unix-sk             allow external unix sockets
  --shell-job               allow a shell job (the container has a terminal)
  --file-locks              checkpoint file locks
  --pre-dump                dump memory only, keep running (needs soft-dirty)
  --page-server ADDR:PORT   send pages to a CRIU page server
  --lazy-pages              leave pages for a lazy-pages daemon to pull
  --status-fd FD            with --lazy-pages: CRIU writes there when ready
  --manage-cgroups-mode M   soft (default), full, strict or ignore
  --empty-ns NS             do not checkpoint this namespace (network)
  --auto-dedup              free the parent images' duplicate pages
"""

import errno

from . import args

SPEC = {
    "--image-path": ("image_path", "str"), "--work-path": ("work_path", "str"),
    "--parent-path": ("parent_path", "str"), "--leave-running": ("leave", "bool"),
    "--tcp-established": ("tcp", "bool"), "--ext-unix-sk": ("ext_unix_sk", "bool"),
    "--shell-job": ("shell_job", "bool"), "--file-locks": ("file_locks", "bool"),
    "--pre-dump": ("pre_dump", "bool"), "--page-server": ("page_server", "str"),
    "--lazy-pages": ("lazy", "bool"), "--status-fd": ("status_fd", "int"),
    "--manage-cgroups-mode": ("cg_mode", "str"), "--empty-ns": ("empty_ns", "list"),
    "--auto-dedup": ("auto_dedup", "bool"),
}
NS_FLAGS = {"network": 0x40000000, "net": 0x40000000}


def help_status(g):
    """`checkpoint --help` exits 0 only when checkpointing can work here (Podman
    asks this way); otherwise it says why."""
    from .. import criu
    try:
        path = criu.find(g.criu)
        v = criu.check_version(path)
    except Exception as e:   # noqa: BLE001 - reported, not raised
        return 1, f"checkpoint/restore is unavailable: {e}"
    return 0, f"uses CRIU {'.'.join(map(str, v))} at {path}"


def parse_common(o):
    from ..criu import rpc
    from ..errors import HutchError
    mode = o.get("cg_mode")
    if mode and mode not in rpc.CG_MODES:
        raise HutchError(f"invalid --manage-cgroups-mode {mode!r} (soft, full, strict, "
                         "ignore)", errno.EINVAL)
    empty = 0
    for ns in o.get("empty_ns") or ():
        if ns not in NS_FLAGS:
            raise HutchError(f"invalid --empty-ns {ns!r}: only network can be left "
                             "empty", errno.EINVAL)
        empty |= NS_FLAGS[ns]
    return mode, empty


def run(g, argv):
    from .. import criu as C
    o, pos = args.parse(argv, SPEC, "checkpoint")
    cid = args.one_id(pos, "checkpoint")
    mode, empty = parse_common(o)
    criu = C.find(g.criu)
    C.check_version(criu, g.root)
    # CRIU's start-up (~3 ms) runs alongside the rest of hutch's
    worker = C.Swrk(criu)
    from ..container.checkpoint import CheckpointOptions, checkpoint
    checkpoint(g.root, cid, o["image_path"] or "checkpoint", CheckpointOptions(
        work_path=o["work_path"], parent_path=o["parent_path"], leave_running=o["leave"],
        tcp_established=o["tcp"], ext_unix_sk=o["ext_unix_sk"],
        shell_job=o["shell_job"], file_locks=o["file_locks"], pre_dump=o["pre_dump"],
        page_server=o["page_server"], lazy_pages=o["lazy"],
        status_fd=o["status_fd"] if o["status_fd"] is not None else -1,
        manage_cgroups_mode=mode, empty_ns=empty, auto_dedup=o["auto_dedup"],
        criu=criu, worker=worker))
    return 0
