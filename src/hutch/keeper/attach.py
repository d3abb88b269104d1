"""The keeper as an attachment of its container (see :mod:`hutch.container.attach`):
recorded in state.json, so that `delete` stops it and `state` reports on it.

Its files are in the container's state directory, under ``keeper/``:

* ``control.sock``: "stop" and "status" (one JSON line each way);
* ``pid``: the keeper's pid and start time (for an undo whose data is None);
* ``dev-log``: the datagram socket bound onto the container's /dev/log;
* ``container.log`` and its rotated ``container.log.N.gz``;
* ``exit-code``: the container's exit status, once its init has exited.
"""

import errno
import os

from ..errors import HutchError

KIND = "hutch.keeper.attach:Keeper"
STOP_TIMEOUT = 3.0


def keeper_dir(state_dir):
    return os.path.join(state_dir, "keeper")


class Keeper:
    """The attachment the keeper process passes to its own `create`: its
    ``attach`` runs in the keeper, once the init has its namespaces and before
    the rootfs (so /dev/log's socket exists when it is bound)."""

    kind = KIND

    def __init__(self, on_attach):
        self._on_attach = on_attach     # called with the state directory

    def attach(self, ctx):
        from ..container.record import proc_stat
        state_dir = os.path.join(ctx.root, ctx.cid)
        self._on_attach(state_dir)
        me = os.getpid()
        return {"pid": me, "starttime": proc_stat(me)[1]}

    @staticmethod
    def detach(ctx, data):
        """Stops the keeper: "stop" on its control socket (it flushes the log),
        then a wait on its pidfd, then SIGKILL.  Succeeds when it is gone
        already."""
        d = keeper_dir(os.path.join(ctx.root, ctx.cid))
        if data is None:
            data = _read_pid(d)
            if data is None:
                return
        if data["pid"] == os.getpid():
            return      # the keeper's own create failed: it exits by itself
        stop(d, data["pid"], data["starttime"])

    @staticmethod
    def annotations(state_dir, data):
        """What `hutch state` adds: whether the keeper runs, and the exit code
        it recorded."""
        from ..container.record import pidfd
        out = {}
        alive = False
        if data:
            fd = pidfd(data["pid"], data["starttime"])
            if fd is not None:
                alive = True
                os.close(fd)
        out["org.hutch.keeper"] = "running" if alive else "gone"
        code = exit_code(state_dir)
        if code is not None:
            out["org.hutch.exit-code"] = str(code)
        return out


def exit_code(state_dir):
    """The container's exit status the keeper recorded, or None."""
    try:
        with open(os.path.join(keeper_dir(state_dir), "exit-code")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def stop(d, pid, starttime, timeout=STOP_TIMEOUT):
    import select
    import _signal as signal
    from ..container.record import pidfd
    fd = pidfd(pid, starttime)
    if fd is None:
        return
    try:
        request(d, {"t": "stop"}, timeout=timeout)
    except HutchError:
        pass        # no answer: the pidfd wait below, then SIGKILL
    try:
        if not select.select([fd], [], [], timeout)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def request(d, msg, timeout=3.0):
    """One request on the keeper's control socket; returns its reply."""
    import _socket
    from .. import jsonlite
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(os.path.join(d, "control.sock"))
        s.sendall(jsonlite.dumps(msg).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as e:
        raise HutchError(f"talk to the keeper: {e.strerror or e}",
                         e.errno or errno.EIO) from None
    finally:
        s.close()
    return jsonlite.loads(buf.decode()) if buf.strip() else {}


def _read_pid(d):
    try:
        with open(os.path.join(d, "pid")) as f:
            pid, start = f.read().split()
        return {"pid": int(pid), "starttime": int(start)}
    except (OSError, ValueError):
        return None
