"""hutch spec [--rootless] [--bundle DIR]

Write a starter config.json into the bundle directory (default: the current one)."""

import os

from . import args

SPEC = {"--bundle": ("bundle", "str"), "-b": ("bundle", "str"),
        "--rootless": ("rootless", "bool")}


def run(g, argv):
    from .. import jsonlite
    from ..errors import HutchError
    from ..spec.defaults import spec
    o, pos = args.parse(argv, SPEC, "spec")
    if pos:
        raise HutchError('"spec" takes no arguments')
    path = os.path.join(o["bundle"] or ".", "config.json")
    if os.path.exists(path):
        import errno
        raise HutchError(f"File {path} exists. Remove it first", errno.EEXIST)
    cfg = spec(o["rootless"], os.geteuid(), os.getegid())
    try:
        with open(path, "x") as f:
            f.write(jsonlite.dumps_pretty(cfg, "\t") + "\n")
    except OSError as e:
        raise HutchError.from_os(f"write {path}", e) from None
    return 0
