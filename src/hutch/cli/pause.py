"""hutch pause ID

Freeze every process in the container (v1 freezer or v2 cgroup.freeze).  Returns
once the freeze has taken effect."""

from . import args


def run(g, argv):
    from ..container.cgroupverbs import pause
    _, pos = args.parse(argv, {}, "pause")
    pause(g.root, args.one_id(pos, "pause"))
    return 0
