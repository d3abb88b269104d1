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
from .sock import accept, alive, keeper_dir, unix_path  # noqa: F401  (the keeper's)

KIND = "hutch.keeper.attach:Keeper"
STOP_TIMEOUT = 3.0


class Keeper:
    """The attachment the keeper process passes to its own `create`: its
    ``attach`` runs in the keeper, once the init has its namespaces and before
    the rootfs (so /dev/log's socket exists when it is bound)."""

    kind = KIND
    SPEC = "hutch-sandbox.json"     # beside a checkpoint's images: how to restore it

    @staticmethod
    def checkpointed(state_dir, data, image_path):
        """After the dump, the keeper's spec and its log go with the images:
        `hutch restore` of them starts a keeper that restores the sandbox as its
        own and goes on with the same log.  The keeper is asked to drain what
        the sandbox wrote before it was frozen first, so no line is lost."""
        import shutil
        d = keeper_dir(state_dir)
        try:
            request(d, {"t": "drain"}, timeout=5.0)
        except HutchError:
            pass        # a dead keeper: its log is what it wrote
        shutil.copyfile(os.path.join(d, "spec.json"), os.path.join(image_path,
                                                                   Keeper.SPEC))
        logs = os.path.join(image_path, "keeper-log")
        os.makedirs(logs, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith("container.log"):
                shutil.copyfile(os.path.join(d, name), os.path.join(logs, name))

    def __init__(self, on_attach, tty=False):
        self._on_attach = on_attach     # called with the state directory and ctx
        self.tty = tty

    def attach(self, ctx):
        from ..container.record import proc_stat
        state_dir = os.path.join(ctx.root, ctx.cid)
        before = len(ctx.mounts)
        self._on_attach(state_dir, ctx)
        me = os.getpid()
        return {"pid": me, "starttime": proc_stat(me)[1], "tty": self.tty,
                "mounts": [dest for _, dest in ctx.mounts[before:]]}

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
        if data["pid"] != os.getpid():      # else its own create failed: it exits
            stop(d, data["pid"], data["starttime"])
        from .viewsvc import unmount_left
        unmount_left(d)

    @staticmethod
    def annotations(state_dir, data):
        """What `hutch state` adds: whether the keeper runs, and the exit code
        it recorded."""
        out = {"org.hutch.keeper": "running" if alive(data) else "gone"}
        if os.path.isdir(os.path.join(keeper_dir(state_dir), "views")):
            out["org.hutch.proc"] = "virtual"
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
    from ..container.record import stop_process
    stop_process(pid, starttime, ask=lambda: request(d, {"t": "stop"}, timeout=timeout),
                 timeout=timeout)


def request(d, msg, timeout=3.0):
    """One request on the keeper's control socket; returns its reply."""
    import _socket
    from .. import jsonlite
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with unix_path(os.path.join(d, "control.sock")) as path:
            s.connect(path)
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


VIEWS_KIND = "hutch.keeper.attach:Views"
HELPER_KIND = "hutch.keeper.main:serve_views"  # the views keeper, as a helper kind


class Views:
    """The attachment that gives a container its own /proc and /sys views
    (meminfo, cpuinfo, stat, uptime, loadavg, diskstats, swaps, and the cpu
    online/present/possible lists): a keeper process serves them over FUSE and
    create binds them over the container's files.  ``helper``: a keeper
    started ahead (a :class:`hutch.process.helper.Helper` of :data:`HELPER_KIND`),
    else one is started here."""

    kind = VIEWS_KIND

    def __init__(self, helper=None, views=True, syslog=False):
        self.helper, self.views, self.syslog = helper, views, syslog

    def attach(self, ctx):
        from ..process import channel
        from ..process.helper import Helper
        if self.views and not ctx.record.cgroup_paths:
            raise HutchError("the /proc and /sys views need the container's cgroup, "
                             "and it has none (rootless without a delegated cgroup "
                             "tree)", errno.EOPNOTSUPP)
        h, self.helper = self.helper or Helper.start(kind=HELPER_KIND), None
        try:
            channel.send(h.sock, {"t": "views", "init_pid": ctx.pid,
                                  "dir": keeper_dir(os.path.join(ctx.root, ctx.cid)),
                                  "cgroup_paths": ctx.record.cgroup_paths,
                                  "views": self.views, "syslog": self.syslog})
            msg = channel.recv(h.sock)
        except OSError as e:
            msg = {"t": "error", "msg": f"talk to the keeper: {e.strerror}",
                   "errno": e.errno}
        finally:
            os.close(h.sock)
            h.sock = -1
        if msg is None or msg.get("t") != "ready":
            _reap(h.pid)
            msg = msg or {"msg": "the keeper exited before it served the views"}
            raise HutchError(msg["msg"], msg.get("errno"))
        ctx.mounts.extend(tuple(m) for m in msg["mounts"])
        return {"pid": msg["pid"], "starttime": msg["starttime"],
                "views": self.views, "syslog": self.syslog,
                "mounts": [m[1] for m in msg["mounts"]]}

    @staticmethod
    def restored(ctx, data):
        if data and data.get("local"):
            return
        """A restored container's keeper learns its init (started before CRIU
        made it)."""
        if data:
            request(keeper_dir(os.path.join(ctx.root, ctx.cid)),
                    {"t": "init", "pid": ctx.pid})

    @staticmethod
    def detach(ctx, data):
        from .viewsvc import unmount_left
        d = keeper_dir(os.path.join(ctx.root, ctx.cid))
        local = _LOCAL.pop(ctx.cid, None)
        if local is not None:
            local.stop()            # served from this process (LocalViews)
        if data is None:
            data = _read_pid(d)
        if data is not None and data["pid"] != os.getpid():
            stop(d, data["pid"], data["starttime"])
            _reap(data["pid"])
        unmount_left(d)

    @staticmethod
    def annotations(state_dir, data):
        out = {"org.hutch.keeper": "running" if alive(data) else "gone"}
        if not data or data.get("views", True):
            out["org.hutch.proc"] = "virtual"
        if data and data.get("syslog"):
            out["org.hutch.syslog"] = "capture"
        return out


def _reap(pid):
    """A keeper that was this process's child (a helper) is reaped once gone."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


_LOCAL = {}     # container id -> the ViewService this process serves


class LocalViews(Views):
    """The views served from a thread of the hutch command itself, for a
    foreground `hutch sandbox`, which lives as long as its container: no
    keeper process to start.  Recorded as :class:`Views` (same undo: if this
    command is killed, `delete -f` detaches the dead mount)."""

    def attach(self, ctx):
        from ..container.record import proc_stat
        from .viewsvc import ViewService
        d = keeper_dir(os.path.join(ctx.root, ctx.cid))
        os.makedirs(d, 0o711, exist_ok=True)
        svc = ViewService(d, ctx.record.cgroup_paths, ctx.pid)
        mounts = svc.start()
        _LOCAL[ctx.cid] = svc
        svc.serve_in_thread()
        ctx.mounts.extend(mounts)
        me = os.getpid()
        return {"pid": me, "starttime": proc_stat(me)[1], "views": True,
                "syslog": False, "mounts": [m[1] for m in mounts], "local": True}
