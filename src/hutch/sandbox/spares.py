"""Helpers for the library, ready at once.

Each container the library makes, and each command it runs in one, goes through
a helper process (:mod:`hutch.process.helper`).  A CLI verb starts a fresh one
and overlaps its start-up (~13 ms here: an interpreter and the container side's
imports) with its own work.  The library lives on, so it keeps a zygote
(:mod:`hutch.process.zygote`): one helper, booted once, that forks a ready
helper per request in ~1 ms.

The zygote starts when the first Sandbox is made (it boots while the caller
goes on) and is started again if it died.  After os.fork() the child has none
(the parent's is the parent's).  It exits by itself when this process does.
"""

import os
import threading

_lock = threading.Lock()
_zygote = None


def warm():
    """Starts the zygote if there is none (it boots in the background)."""
    global _zygote
    with _lock:
        if _zygote is None or not _zygote.alive():
            from ..process.zygote import Zygote
            if _zygote is not None:
                _zygote.close()
            _zygote = Zygote()
    return _zygote


def take(kind):
    """A ready helper of ``kind`` ("create", "enter", or a "hutch.MODULE:FUNCTION"
    kind such as the views keeper's) for CreateOptions or ExecOptions ``helper`` (or the keeper's
    attachment); None if the zygote cannot give one (the core then
    starts a helper the usual way)."""
    from ..errors import HutchError
    z = warm()
    with _lock:
        try:
            return z.spawn(kind)
        except HutchError:
            return None


def _forget_in_child():
    global _lock, _zygote
    _lock = threading.Lock()
    if _zygote is not None:
        try:
            os.close(_zygote._h.sock)
        except OSError:
            pass
    _zygote = None


os.register_at_fork(after_in_child=_forget_in_child)
