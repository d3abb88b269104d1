"""hutch wait ID

Wait until the container stops, and exit with its exit code (what its keeper
recorded: the command's status, 128+N when signal N ended it).  For a detached
sandbox (`hutch sandbox -d`); another container has no keeper to record it.
"""

from . import args


def run(g, argv):
    from ..keeper import client
    _, pos = args.parse(argv, {}, "wait")
    return client.wait(g.root, args.one_id(pos, "wait"))
