"""hutch state ID

Print the container's state as the OCI runtime-spec defines it."""

import sys

from . import args


def run(g, argv):
    from .. import jsonlite
    from ..container.lifecycle import state
    _, pos = args.parse(argv, {}, "state")
    st = state(g.root, args.one_id(pos, "state"))
    sys.stdout.write(jsonlite.dumps_pretty(st) + "\n")
    return 0
