"""Starting a keeper (:mod:`.main`) from a hutch command.

A double fork and a new session, so that the keeper is nobody's child that
waits for it and has no terminal; its stdio is /dev/null.  It then re-executes
the interpreter (from the read-only clone when the guard needs one, as a
helper does), so it carries nothing of the command's memory.  Its spec goes
over a socketpair; the command waits for "ready" (the container runs) or the
error that stopped it.
"""

import os
import sys

from ..errors import HutchError
from ..process import channel


def start(spec):
    """Starts a keeper for ``spec`` (see :class:`hutch.keeper.main._Keeper`);
    returns its "ready" message once the container runs."""
    from ..linux.exeguard import needs_reexec
    from .main import _BOOT
    reexec, _ = needs_reexec(False)
    ours, theirs = channel.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ours)
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            exe = sys.executable
            if reexec:
                from ..linux import exeguard
                exe = exeguard.guarded_exe_fd()
            os.set_inheritable(theirs, True)
            pkg_dir = os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))
            site = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
            os.execve(exe, [sys.executable, "-I", "-S", "-c", _BOOT, pkg_dir,
                            str(theirs)] + site, os.environ)
        finally:
            os._exit(127)
    os.close(theirs)
    try:
        os.waitpid(pid, 0)
        channel.send(ours, spec)
        msg = channel.recv(ours)
    finally:
        os.close(ours)
    if msg is None:
        raise HutchError("the keeper exited before the container ran")
    if msg.get("t") == "error":
        raise HutchError(msg["msg"], msg.get("errno"))
    return msg
