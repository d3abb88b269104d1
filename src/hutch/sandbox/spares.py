"""Warm helpers for the library.

Each container the library makes, and each command it runs in one, goes through
a helper process (:mod:`hutch.process.helper`): a fresh interpreter, started from
the read-only clone of hutch's own, that imports the container side and then
becomes the container's init or enters it.  Its start-up is most of what a run
costs (~20 ms here).  A CLI verb overlaps it with its own work; the library,
which lives on, keeps one helper of each kind started ahead, so that the next
sandbox or run finds one ready and only forks and execs.

A spare is taken under a lock and replaced at once (the fork is quick; the new
helper boots while the caller's command runs).  After os.fork() the child has
no spares (the parent's are the parent's).  A spare that died is noticed when
taken, and a fresh one is used instead.  They exit by themselves when this
process does (their socket closes).
"""

import os
import threading

_lock = threading.Lock()
_spares = {}        # kind ("create", "enter") -> Helper


def take(kind):
    """A started helper of ``kind`` for the caller to pass on (CreateOptions or
    ExecOptions ``helper``); another is started in its place."""
    from ..process.helper import Helper
    with _lock:
        h = _spares.pop(kind, None)
        if h is None:
            h = Helper.start(kind=kind)
        try:
            _spares[kind] = Helper.start(kind=kind)
        except Exception:   # noqa: BLE001 - a spare is an optimisation only
            pass
    return h


def prestart(*kinds):
    """Starts a spare of each kind that has none."""
    from ..process.helper import Helper
    with _lock:
        for kind in kinds:
            if kind not in _spares:
                try:
                    _spares[kind] = Helper.start(kind=kind)
                except Exception:   # noqa: BLE001
                    pass


def close_all():
    """Dismisses the spares (they exit; they are reaped)."""
    with _lock:
        hs = list(_spares.values())
        _spares.clear()
    for h in hs:
        h.close()


def _forget_in_child():
    global _lock
    _lock = threading.Lock()
    for h in _spares.values():
        try:
            os.close(h.sock)
        except OSError:
            pass
    _spares.clear()


os.register_at_fork(after_in_child=_forget_in_child)
