"""hutch state ID

Print the container's state as the OCI runtime-spec defines it."""

import sys

from . import args


def run(g, argv):
    from .. import container, jsonlite
    _, pos = args.parse(argv, {}, "state")
    st = container.state(g.root, args.one_id(pos, "state"))
    sys.stdout.write(jsonlite.dumps_pretty(st) + "\n")
    return 0
