"""hutch start ID

Start the user process of a created container."""

from . import args


def run(g, argv):
    from ..container.lifecycle import start
    _, pos = args.parse(argv, {}, "start")
    start(g.root, args.one_id(pos, "start"))
    return 0
