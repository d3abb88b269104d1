"""A booted helper that forks helpers: for a caller that makes many containers
(the library).

A helper's start-up is an interpreter start plus the container side's imports
(~13 ms here, most of a library run's cost).  The zygote pays it once: it is a
helper (started like any other, from the read-only interpreter clone when the
guard needs it) that imports both kinds' modules and then, on request, forks a
helper that is ready at once.

The forked helper is born with CLONE_PARENT, so it is the caller's child, not
the zygote's: the caller waits for it and is its subreaper exactly as for a
helper it started itself.  It gets the socket the caller sent with the request
as its channel and runs :func:`hutch.process.helper.serve_booted`.  The zygote
is single-threaded, so a raw clone (which skips libc's and Python's fork
handlers) leaves nothing half-held in the child.

If the caller goes away, the zygote sees EOF and exits.
"""

import os

from . import channel

KIND = "hutch.process.zygote:serve"      # the helper kind that runs it
CLONE_PARENT = 0x00008000
SIGCHLD = 17


def _clone_parent():
    """fork(), but the child is a sibling: its parent is the zygote's parent."""
    import ctypes
    from ..linux import kernel as K
    nr = 56 if K._MACHINE == "x86_64" else 220
    pid = K._lib().syscall(nr, ctypes.c_ulong(CLONE_PARENT | SIGCHLD),
                           ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                           ctypes.c_ulong(0))
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


def serve(sock):
    """The zygote's main (a helper of kind :data:`KIND`)."""
    from . import enter, helper, init
    init.preload()
    enter.preload()
    helper._unspread()      # its helpers run on any CPU
    while True:
        msg = channel.recv(sock)
        if msg is None or msg.get("t") != "fork":
            os._exit(0)
        fd = channel.recv_fds(sock, 1)[0]
        try:
            if ":" in msg["kind"]:
                helper.function(msg["kind"])    # imported here once: warm after
            pid = _clone_parent()
        except (OSError, ImportError, ValueError, AttributeError) as e:
            os.close(fd)
            channel.send(sock, {"t": "error", "errno": getattr(e, "errno", None),
                                "msg": f"fork a helper: {e}"})
            continue
        if pid == 0:
            try:
                os.close(sock)
                helper.serve_booted(fd, msg["kind"])
            finally:
                os._exit(1)
        os.close(fd)
        channel.send(sock, {"t": "pid", "pid": pid})


class Zygote:
    """The caller's side: ``spawn(kind)`` returns a ready :class:`Helper`."""

    def __init__(self):
        from .helper import Helper
        self._h = Helper.start(kind=KIND)

    @property
    def strict(self):
        return self._h.strict

    def alive(self):
        try:
            return self._h.pid and os.waitpid(self._h.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def spawn(self, kind):
        from ..errors import HutchError
        from .helper import Helper
        ours, theirs = channel.socketpair()
        try:
            channel.send(self._h.sock, {"t": "fork", "kind": kind})
            channel.send_fds(self._h.sock, [theirs])
        except OSError as e:
            os.close(ours)
            raise HutchError(f"ask the zygote for a helper: {e.strerror}",
                             e.errno) from None
        finally:
            os.close(theirs)
        msg = channel.recv(self._h.sock)
        if msg is None or msg.get("t") != "pid":
            os.close(ours)
            raise HutchError((msg or {}).get("msg") or "the zygote exited",
                             (msg or {}).get("errno"))
        h = Helper(msg["pid"], ours)
        h.strict = self._h.strict
        return h

    def close(self):
        self._h.close()
