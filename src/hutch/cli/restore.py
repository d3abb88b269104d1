"""hutch restore [options] ID

Restore a container from CRIU images, with the bundle's config.json.  In the
foreground hutch waits for it and returns its exit code; with --detach it returns
once the container runs.

options:
  --image-path DIR          the images (default ./checkpoint)
  --work-path DIR           CRIU's logs and work files (default: the image path)
  --bundle, -b DIR          the bundle (default: the current directory)
  --detach, -d              return once the container runs
  --pid-file FILE           write the restored init's pid to FILE
  --console-socket PATH     send a restored terminal's master fd to this socket
  --no-subreaper            do not become a subreaper for the restored init
  --no-pivot                accepted for runc compatibility (CRIU sets the root)
  --tcp-established         restore established TCP connections
  --ext-unix-sk             allow external unix sockets
  --shell-job               allow a shell job
  --file-locks              restore file locks
  --lazy-pages              pull pages lazily (a `criu lazy-pages` daemon serves them)
  --manage-cgroups-mode M   soft (default), full, strict or ignore
  --empty-ns NS             the namespace left out at checkpoint (network)
  --auto-dedup              free restored pages from the images
"""

from . import args

SPEC = {
    "--image-path": ("image_path", "str"), "--work-path": ("work_path", "str"),
    "--bundle": ("bundle", "str"), "-b": ("bundle", "str"),
    "--detach": ("detach", "bool"), "-d": ("detach", "bool"),
    "--pid-file": ("pid_file", "str"), "--console-socket": ("console_socket", "str"),
    "--no-subreaper": ("no_subreaper", "bool"), "--no-pivot": ("no_pivot", "bool"),
    "--tcp-established": ("tcp", "bool"), "--ext-unix-sk": ("ext_unix_sk", "bool"),
    "--shell-job": ("shell_job", "bool"), "--file-locks": ("file_locks", "bool"),
    "--lazy-pages": ("lazy", "bool"), "--manage-cgroups-mode": ("cg_mode", "str"),
    "--empty-ns": ("empty_ns", "list"), "--auto-dedup": ("auto_dedup", "bool"),
}


def help_status(g):
    from .checkpoint import help_status as h
    return h(g)


def run(g, argv):
    from ..container.restore import RestoreOptions, restore
    from .checkpoint import parse_common
    from .create import keeper_hook
    o, pos = args.parse(argv, SPEC, "restore")
    cid = args.one_id(pos, "restore")
    mode, empty = parse_common(o)
    import os
    images = os.path.abspath(o["image_path"] or "checkpoint")
    if os.path.exists(os.path.join(images, "hutch-sandbox.json")):
        return _sandbox(g, cid, images, o)
    g.check_cgroup_driver()
    return restore(g.root, cid, o["bundle"] or ".", o["image_path"] or "checkpoint",
                   RestoreOptions(
                       work_path=o["work_path"], detach=o["detach"],
                       pid_file=o["pid_file"], console_socket=o["console_socket"],
                       no_subreaper=o["no_subreaper"], no_pivot=o["no_pivot"],
                       tcp_established=o["tcp"], ext_unix_sk=o["ext_unix_sk"],
                       shell_job=o["shell_job"], file_locks=o["file_locks"],
                       lazy_pages=o["lazy"], manage_cgroups_mode=mode, empty_ns=empty,
                       auto_dedup=o["auto_dedup"], criu=g.criu,
                       config_hooks=(keeper_hook,)))


def _sandbox(g, cid, images, o):
    """The images of a detached sandbox (`hutch sandbox -d`, checkpointed): a new
    keeper restores it as its own, and the command returns once it runs."""
    import os
    from .. import jsonlite
    from ..errors import HutchError
    from ..keeper.launch import start
    if o["bundle"] or o["console_socket"] or o["pid_file"]:
        raise HutchError("restore: these images are a detached sandbox's, which its "
                         "own config and keeper come with: give no --bundle, "
                         "--console-socket or --pid-file")
    from ..sandbox.detached import keeper_spec
    with open(os.path.join(images, "hutch-sandbox.json"), "rb") as f:
        old = jsonlite.loads(f.read())
    # its config made anew for this name (its keeper's paths are under it)
    start(keeper_spec(g.root, cid, old["settings"], old["args"], old.get("log"),
                      old.get("tty"), old.get("term"), restore=images))
    return 0
