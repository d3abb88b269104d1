"""hutch run [options] ID

Create and start a container.  In the foreground it waits for the container's
process, forwards signals to it, deletes the container, and exits with the
process's status (128+N when killed by signal N).

options: those of `hutch create`, plus
  --detach, -d     return once the container is running
  --keep           do not delete the container when it exits
"""

from . import args
from .create import SPEC as CREATE_SPEC, common

SPEC = dict(CREATE_SPEC, **{"--detach": ("detach", "bool"), "-d": ("detach", "bool"),
                            "--keep": ("keep", "bool")})


def run(g, argv):
    from ..container.run import run as run_container
    o, pos = args.parse(argv, SPEC, "run")
    cid = args.one_id(pos, "run")
    return run_container(g.root, cid, o["bundle"] or ".", common(g, o),
                         detach=o["detach"], keep=o["keep"])
