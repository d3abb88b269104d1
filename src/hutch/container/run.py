"""`run`: a container in the foreground: create, start, forward signals, wait,
delete, and return the exit status (128+N for a signal).  Used by `hutch run` and
`hutch sandbox`.

hutch is a child subreaper while it creates the container, so the init becomes
hutch's own child and its exit status can be collected directly.  With
``process.terminal`` and no --console-socket, hutch makes the console socket itself
and copies bytes between its own stdio and the container's pty.
"""

import os

from ..errors import HutchError
from . import console
from .create import CreateOptions, create
from .lifecycle import delete, start


def run(root, cid, bundle, opts=None, cfg=None, detach=False, keep=False):
    """Runs container ``cid``; ``opts`` are create's (:class:`CreateOptions`).
    Returns the exit status, or 0 at once with ``detach``."""
    o = opts or CreateOptions()
    proxy = None
    if cfg is None:
        from .plan import load
        cfg = load(os.path.abspath(bundle))
    want_tty = bool(cfg.process and cfg.process.terminal)
    if want_tty and not o.console_socket:
        if detach:
            raise HutchError("cannot allocate a tty when hutch detaches without "
                             "--console-socket")
        from ..linux.fdpass import socketpair
        ours, theirs = socketpair()
        o.console_fd = theirs
        proxy = ours
    try:
        rec = create(root, cid, bundle, o, cfg=cfg)
    finally:
        if proxy is not None:
            os.close(o.console_fd)
            o.console_fd = -1
    pid = rec.pid
    master = console.recv_master(proxy) if proxy is not None else None
    if not detach:
        console.hold_signals()  # from the start of the user's program until forwarding
    try:
        start(root, cid)
    except BaseException:
        console.release_signals()
        delete(root, cid, force=True)
        raise
    if detach:
        return 0
    code = console.wait_child(pid, master)
    if not keep:
        delete(root, cid, force=True)
    return code
