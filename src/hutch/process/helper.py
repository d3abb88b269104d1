"""The process that enters the container: a fresh interpreter started early.

`hutch create` (and run, sandbox) forks this helper as its first act, before it
even reads config.json.  The helper fexecve()s the interpreter from a detached,
read-only clone of its mount (see :mod:`hutch.linux.exeguard`), imports everything
the container side needs, and waits for the plan.  On a 2-core machine its start-up
runs alongside the parent's work (config, state, cgroups) instead of after it.

The helper then becomes stage1 of the fork chain (:func:`hutch.process.init.stage1`):
the parent sends the plan over a socketpair and the plan's fds with SCM_RIGHTS.
A "prepare" message may come first: what the helper can do before the plan
(join the cgroups, make the namespaces), done while the parent checks the config.
If the parent goes away or closes the socket first, the helper exits quietly.

When no guard is needed (rootless, or the interpreter is already on a read-only
mount) the helper is a plain fork that imports the same modules.
"""

import os
import sys

from . import channel

_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from hutch.process.helper import serve; serve(int(sys.argv[2]), sys.argv[3])")

_prestarted = None
_affinity = None     # the hutch command's CPU mask, which the helper takes back


def _own_cpu():
    """The CPU this process runs on (field 39 of /proc/self/stat), or None."""
    try:
        fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        return int(data.rsplit(b")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def _spread(pid, cpu):
    """Starts the new helper on another CPU than this process.  The scheduler
    queues a forked child on its parent's CPU, where it waits behind the busy
    parent for up to a time slice (~3 ms on the 2-CPU test VM) while another CPU
    idles, and the helper's start-up is meant to overlap the parent's work.  The
    helper takes the mask back (:func:`_unspread`) with the first message it
    gets, which this command sends only after this, so the container's
    processes have the command's mask as before.  A hint only: any failure
    leaves the scheduler's choice."""
    if not _affinity or len(_affinity) < 2:
        return
    others = [c for c in _affinity if c != cpu]
    try:
        os.sched_setaffinity(pid, others[:1])
    except OSError:
        pass


def _unspread():
    if _affinity and len(_affinity) > 1:
        try:
            os.sched_setaffinity(0, _affinity)
        except OSError:
            pass


class Helper:
    def __init__(self, pid, sock):
        self.pid = pid
        self.sock = sock
        self.strict = False     # guarded even against CAP_LINUX_IMMUTABLE

    @classmethod
    def start(cls, close=(), kind="create", strict=False):
        """``close``: fds of the caller that the helper must not keep, such as the
        state directory's lock (it must not outlive `hutch create`).  ``kind``:
        "create" (the helper becomes the container's init) or "enter" (it enters
        a running container, :mod:`hutch.process.enter`); it decides what the
        helper imports while it waits.  ``strict``: re-exec from a read-only
        clone even when the interpreter is immutable (see exeguard)."""
        from ..linux.exeguard import needs_reexec
        global _affinity
        reexec, fully_guarded = needs_reexec(strict)
        psock, csock = channel.socketpair()
        if _affinity is None:
            try:
                _affinity = os.sched_getaffinity(0)
            except OSError:
                _affinity = ()
        # read before the fork: after it, every page this process writes is a
        # copy-on-write fault, which made the read ~3x dearer
        cpu = _own_cpu() if not reexec and len(_affinity) > 1 else None
        pid = os.fork()
        if pid == 0:
            # the read-only clone is made here, not in the parent: ctypes and the
            # clone then cost the parent nothing, and the helper execs ~1 ms sooner
            try:
                os.close(psock)
                for fd in close:
                    os.close(fd)
                exe = None
                if reexec:
                    from ..linux import exeguard
                    exe = exeguard.guarded_exe_fd()
                if exe is None:
                    if ":" in kind:
                        # nothing of the caller's but stdio: it lives on, and a
                        # library caller's other threads may hold fds (a
                        # container's lock) it must not keep (a helper keeps
                        # them: --preserve-fds and LISTEN_FDS pass through it)
                        os.closerange(3, csock)
                        os.closerange(csock + 1, 1 << 20)
                    serve(csock, kind)
                os.set_inheritable(csock, True)
                pkg_dir = os.path.dirname(os.path.dirname(os.path.dirname(
                    os.path.abspath(__file__))))
                os.execve(exe, [sys.executable, "-I", "-S", "-c", _BOOT, pkg_dir,
                                str(csock), kind], os.environ)
            except BaseException as e:   # noqa: BLE001 - reported through the socket
                try:
                    channel.send(csock, {"t": "error", "errno": getattr(e, "errno", None),
                                         "msg": f"start the container helper: {e}"})
                finally:
                    os._exit(1)
        os.close(csock)
        if not reexec:
            _spread(pid, cpu)
        h = cls(pid, psock)
        h.strict = fully_guarded
        return h

    def close(self):
        """Dismisses an unused helper: it sees EOF and exits; it is reaped here."""
        if self.sock >= 0:
            os.close(self.sock)
            self.sock = -1
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def prestart(kind="create"):
    """Starts the helper now, for :func:`take` to hand out later."""
    global _prestarted
    if _prestarted is None:
        _prestarted = Helper.start(kind=kind)
    return _prestarted


def take(close=(), kind="create", strict=False, spare=None):
    """The prestarted helper (or ``spare``, one the caller started earlier), or
    a new one (also when ``strict`` asks for more than the prestarted one has:
    see :mod:`hutch.linux.exeguard`, or when it has died)."""
    global _prestarted
    if spare is not None:
        h = spare
        try:
            if os.waitpid(h.pid, os.WNOHANG)[0]:
                h.pid = 0           # it died while it waited
                h.close()
                h = None
        except ChildProcessError:
            h.pid = 0
            h.close()
            h = None
    else:
        h, _prestarted = _prestarted, None
    if h is not None and strict and not h.strict:
        h.close()
        h = None
    return h if h is not None else Helper.start(close, kind, strict)


def dismiss():
    """Reaps a prestarted helper that was never used (the command failed early)."""
    global _prestarted
    h, _prestarted = _prestarted, None
    if h is not None:
        h.close()


def send_plan(h, plan):
    """Sends the plan; its fds travel separately with SCM_RIGHTS and are put back
    in place on the other side."""
    fds = [fd for _, fd in plan["join"]]
    for key in ("console_socket", "fifo_fd"):
        if plan[key] >= 0:
            fds.append(plan[key])
    fds.extend(plan.get("stdio") or ())
    channel.send(h.sock, {"t": "plan", "plan": plan, "nfds": len(fds)})
    if fds:
        channel.send_fds(h.sock, fds)


def send_enter(sock, plan, pidfd, console_sock=-1):
    """Sends an entry plan (:mod:`hutch.process.enter`) with the target's pidfd
    (and the plan's ``stdio`` fds, last)."""
    fds = [pidfd] + ([console_sock] if console_sock >= 0 else [])
    fds.extend(plan.get("stdio") or ())
    channel.send(sock, {"t": "enter", "plan": plan, "nfds": len(fds)})
    channel.send_fds(sock, fds)


def prepare_enter(sock, plan):
    """Lets the exec helper join the target's cgroups before its plan comes
    (:func:`hutch.process.enter.prepare`)."""
    channel.send(sock, {"t": "prepare", "cgroup_paths": plan["cgroup_paths"],
                        "ns_flags": plan["ns_flags"]})


def wait_joined(sock):
    """Waits until the exec helper is in the target's cgroups
    (:func:`hutch.process.enter.join_cgroups`); raises its error if it failed."""
    from ..errors import HutchError
    msg = channel.recv(sock)
    if msg is None:
        raise HutchError("the exec helper exited during setup")
    if msg["t"] == "error":
        raise HutchError(msg["msg"], msg.get("errno"))


def serve(sock, kind="create"):
    """The helper's main: import the container side, wait for the plan, run it
    (or, for a kind "hutch.MODULE:FUNCTION", run that: the zygote of
    :mod:`hutch.process.zygote`, the keeper's views)."""
    os.set_inheritable(sock, False)
    if ":" in kind:             # a helper of another layer's (the keeper)
        serve_booted(sock, kind)
    if kind == "enter":
        from . import enter
        enter.preload()
    else:
        from . import init
        init.preload()
    serve_booted(sock, kind)


def serve_booted(sock, kind):
    """:func:`serve`, its imports done.  A kind "hutch.MODULE:FUNCTION" (the
    keeper's) runs that function with the channel instead."""
    if ":" in kind:
        function(kind)(sock)
        os._exit(0)
    msg = channel.recv(sock)
    _unspread()
    prepared = None
    if msg is not None and msg.get("t") == "prepare":
        if kind == "enter":
            from . import enter
            prepared = enter.prepare(msg, sock)
        else:
            from . import init
            prepared = init.prepare(msg, sock)
        msg = channel.recv(sock)
    if msg is None or msg.get("t") not in ("plan", "enter"):
        os._exit(0)
    if msg["t"] == "enter":
        from . import enter
        fds = channel.recv_fds(sock, msg["nfds"])
        sock = _take_stdio(msg["plan"], fds, sock)
        enter.stage(msg["plan"], sock, fds[0], fds[1] if len(fds) > 1 else -1,
                    prepared)
        os._exit(1)
    from . import init
    plan = msg["plan"]
    fds = channel.recv_fds(sock, msg["nfds"]) if msg["nfds"] else []
    sock = _take_stdio(plan, fds, sock)
    fds = iter(fds)
    plan["join"] = [(t, next(fds)) for t, _ in plan["join"]]
    for key in ("console_socket", "fifo_fd"):
        if plan[key] >= 0:
            plan[key] = next(fds)
    init.stage1(plan, sock, prepared)
    os._exit(1)


def _take_stdio(plan, fds, sock):
    """The plan's ``stdio`` (the last three fds received, when the caller gave
    them: the library's pipes) become this helper's 0, 1 and 2, which the
    container's process inherits; the caller's own stdio is not used.  Returns
    the channel's fd, moved if it was one of 0-2 (a caller with stdio closed)."""
    if not plan.get("stdio"):
        return sock
    import fcntl
    if sock <= 2:
        nsock = fcntl.fcntl(sock, fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(sock)
        sock = nsock
    # above 2 first, so that placing one cannot overwrite another not yet placed
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in fds[-3:]]
    for fd in fds[-3:]:
        os.close(fd)
    del fds[-3:]
    for target, fd in enumerate(high):
        os.dup2(fd, target)         # inheritable: the process keeps them
        os.close(fd)
    plan["stdio"] = None
    return sock


def function(kind):
    """The function a "hutch.MODULE:FUNCTION" kind names (imported)."""
    import importlib
    mod, _, name = kind.partition(":")
    if not mod.startswith("hutch.") or not name.isidentifier():
        raise ValueError(f"helper kind {kind!r}: not a hutch.MODULE:FUNCTION")
    return getattr(importlib.import_module(mod), name)
