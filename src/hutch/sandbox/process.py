"""A process the library started in a sandbox (`Sandbox.spawn`), and the
result of a finished one (`Sandbox.run`).

Every process gets a cgroup of its own below the sandbox's, so that a timeout or
``kill()`` ends all it started, however it forked or detached: ``cgroup.kill``
in the v2 hierarchy, else freeze, kill and thaw in the v1 freezer.  A rootless
sandbox without a delegated cgroup tree can only kill the process's session
(what setsid() made of it); a process that left it survives until the sandbox
closes.

The process is the caller's own child (hutch makes the caller a child
subreaper), so its exact wait status is known: ``returncode`` is its exit code,
or -N when signal N killed it, as in :mod:`subprocess`.
"""

import errno
import os
import select
import time

from ..errors import HutchError, TimeoutExpired

PIPE = -1
STDOUT = -2
DEVNULL = -3

_CHUNK = 65536


class Result:
    """What a finished command did.  ``returncode``: the exit code, or -N when
    signal N ended it (``signal`` is then N); ``timed_out``: hutch ended it at
    its timeout; ``oom_killed``: the sandbox's memory limit did."""

    __slots__ = ("args", "returncode", "stdout", "stderr", "duration", "timed_out",
                 "oom_killed", "signal")

    def __init__(self, args, returncode, stdout, stderr, duration, timed_out=False,
                 oom_killed=False):
        self.args, self.returncode = args, returncode
        self.stdout, self.stderr, self.duration = stdout, stderr, duration
        self.timed_out, self.oom_killed = timed_out, oom_killed
        self.signal = -returncode if returncode is not None and returncode < 0 else None

    @property
    def ok(self):
        return self.returncode == 0

    def check_returncode(self):
        if self.returncode != 0:
            from ..errors import CommandFailed
            raise CommandFailed(self)

    def __repr__(self):
        extra = "".join(f", {k}=True" for k in ("timed_out", "oom_killed")
                        if getattr(self, k))
        return (f"Result(args={self.args!r}, returncode={self.returncode}, "
                f"duration={self.duration:.3f}{extra})")


class RunGroup:
    """The cgroup of one process and all it starts: a sub-cgroup of the
    sandbox's, in the v2 hierarchy when it has ``cgroup.kill``, else in the v1
    freezer's.  ``spec`` is what exec joins (its ``--cgroup`` form)."""

    def __init__(self, paths, name):
        self.path = self.spec = self.kind = None
        unified = paths.get("unified")
        if unified and os.path.exists(os.path.join(unified, "cgroup.kill")):
            self.kind, self.path = "v2", os.path.join(unified, name)
            self.spec = name if len(paths) == 1 else f"unified:{name}"
        else:
            for key, path in paths.items():
                if "freezer" in key.split(","):
                    self.kind, self.path = "v1", os.path.join(path, name)
                    self.spec = f"freezer:{name}"
        if self.path is not None:
            try:
                os.mkdir(self.path, 0o755)
            except OSError as e:
                raise HutchError(f"make the cgroup {self.path}: {e.strerror}",
                                 e.errno) from None

    def kill(self):
        if self.kind == "v2":
            try:
                with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                    f.write("1")
            except FileNotFoundError:
                pass
        elif self.kind == "v1":
            from ..cgroups.manager import Manager
            try:
                Manager({"freezer": self.path}).kill_all(9)
            except (HutchError, OSError):
                pass

    def remove(self, wait=0.0):
        """Removes the cgroup once it is empty; returns False if something still
        runs in it (it then goes with the sandbox)."""
        if self.path is None:
            return True
        deadline = time.monotonic() + wait
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return False
            time.sleep(0.002)


class Process:
    """A running command in a sandbox, like :class:`subprocess.Popen`: ``pid``
    (the host's), ``stdin``/``stdout``/``stderr`` (binary file objects for
    PIPE), ``wait``, ``communicate``, ``poll``, ``kill``, ``terminate``,
    ``send_signal``, ``returncode``."""

    def __init__(self, args, pid, group, stdin, stdout, stderr, oom_count=None,
                 started=None):
        self.args, self.pid, self._group = args, pid, group
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode = None
        self.killed_at_timeout = False
        self._pidfd = os.pidfd_open(pid)
        self._oom_count = oom_count      # (read(), count before), or None
        self._start = started if started is not None else time.monotonic()
        self.duration = None
        import threading
        self._reaping = threading.Lock()     # one reap, whichever thread waits

    # --- waiting --------------------------------------------------------------------
    def poll(self):
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout=None):
        """The return code; raises :class:`TimeoutExpired` (the process runs on)."""
        if self.returncode is None:
            if timeout is not None:
                r, _, _ = select.select([self._pidfd], [], [], max(0.0, timeout))
                if not r:
                    raise TimeoutExpired(self.args, timeout)
            self._reap(0)
        return self.returncode

    def _reap(self, flags):
        with self._reaping:
            if self.returncode is None:
                self._reap_locked(flags)

    def _reap_locked(self, flags):
        while True:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except InterruptedError:
                continue
            except ChildProcessError:
                # someone else reaped it (a waitpid(-1) in the caller's program)
                pid, status = self.pid, None
            break
        if pid == 0:
            return
        self.duration = time.monotonic() - self._start
        self.returncode = os.waitstatus_to_exitcode(status) if status is not None \
            else -9
        os.close(self._pidfd)
        self._pidfd = -1
        if self._group is not None:
            self._group.remove(wait=0.2 if self.killed_at_timeout else 0.0)
        forget = getattr(self, "_forget", None)
        if forget is not None:
            forget(self)

    def oom_killed(self):
        """True if the sandbox's memory limit killed a process while this one
        ran (it, or one it waited for: a shell then exits with 137).  The
        count is the sandbox's: a concurrent run's OOM kill counts too."""
        if self._oom_count is None or self.returncode == 0:
            return False
        read, before = self._oom_count
        return read() > before

    # --- signals --------------------------------------------------------------------
    def send_signal(self, sig):
        if self.returncode is None and self._pidfd >= 0:
            import _signal as signal
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        import _signal as signal
        self.send_signal(signal.SIGTERM)

    def kill(self):
        """Kills the process and everything it started (its cgroup)."""
        import _signal as signal
        if self._group is not None and self._group.path is not None:
            self._group.kill()
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)     # its session's group
            except (ProcessLookupError, PermissionError):
                pass
        self.send_signal(signal.SIGKILL)

    # --- i/o ------------------------------------------------------------------------
    def communicate(self, input=None, timeout=None):
        """Writes ``input``, reads stdout and stderr until the process exits,
        then what is left in the pipes; returns (stdout, stderr) as bytes (None
        for a stream that is not a pipe).  A process that left a child holding
        the pipes does not make this wait for that child.  On timeout raises
        :class:`TimeoutExpired`; call again to go on."""
        if not hasattr(self, "_bufs"):
            self._bufs = {}
            self._input = memoryview(input or b"")
            self._in_done = False
        bufs = self._bufs
        readers = {}
        for f in (self.stdout, self.stderr):
            if f is not None and not f.closed:
                readers[f.fileno()] = f
                bufs.setdefault(f.fileno(), [])
        writer = None
        if self.stdin is not None and not self.stdin.closed:
            if self._input and not self._in_done:
                writer = self.stdin.fileno()
                os.set_blocking(writer, False)
            else:
                self._close_stdin()
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        for fd in readers:
            poller.register(fd, select.POLLIN)
        if writer is not None:
            poller.register(writer, select.POLLOUT)
        if self.returncode is None:
            poller.register(self._pidfd, select.POLLIN)
        live = set(readers) | ({writer} if writer is not None else set())
        exited = self.returncode is not None
        while live and not exited:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutExpired(self.args, timeout, *self._joined())
            for fd, ev in poller.poll(None if left is None else left * 1000):
                if fd == self._pidfd:
                    exited = True
                elif fd == writer:
                    try:
                        n = os.write(fd, self._input[:_CHUNK])
                        self._input = self._input[n:]
                    except BlockingIOError:
                        n = 0
                    except BrokenPipeError:
                        self._input = memoryview(b"")
                    if not self._input:
                        poller.unregister(fd)
                        live.discard(fd)
                        self._in_done = True
                        self._close_stdin()
                else:
                    data = os.read(fd, _CHUNK)
                    if data:
                        bufs[fd].append(data)
                    else:
                        poller.unregister(fd)
                        live.discard(fd)
        if writer is not None and not self._in_done:
            self._in_done = True
            self._close_stdin()
        # the process has exited: what it wrote is in the pipes now; a child it
        # left behind may hold them open, so read without waiting for EOF
        for fd in live:
            if fd in readers:
                os.set_blocking(fd, False)
                while True:
                    try:
                        data = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    bufs[fd].append(data)
        self.wait()
        out = self._joined()
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        return out

    def _joined(self):
        outs = []
        for f in (self.stdout, self.stderr):
            if f is None:
                outs.append(None)
            else:
                outs.append(b"".join(self._bufs.get(f.fileno(), [])))
        return tuple(outs)

    def _close_stdin(self):
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        if self.returncode is None:
            self.kill()
            self.wait()

    def __del__(self):
        if getattr(self, "_pidfd", -1) >= 0:
            try:
                os.close(self._pidfd)
            except OSError:
                pass

    def __repr__(self):
        return f"<hutch.Process pid={self.pid} returncode={self.returncode}>"
