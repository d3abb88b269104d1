"""hutch attach ID

Connect this terminal to a detached sandbox (`hutch sandbox -d`): its output
here and, when it has a terminal (-t), this terminal's input and size there.
Ctrl-P Ctrl-Q detaches and leaves it running.  Exits with its exit code when it
stops, 0 when detached.
"""

from . import args


def run(g, argv):
    from ..keeper import client
    _, pos = args.parse(argv, {}, "attach")
    return client.attach(g.root, args.one_id(pos, "attach"))
