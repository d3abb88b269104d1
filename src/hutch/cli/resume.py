"""hutch resume ID

Thaw a paused container.  Returns once every process runs again."""

from . import args


def run(g, argv):
    from ..container.cgroupverbs import resume
    _, pos = args.parse(argv, {}, "resume")
    resume(g.root, args.one_id(pos, "resume"))
    return 0
